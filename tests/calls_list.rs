use std::collections::{HashMap, HashSet};

use shared::calls::{Call, Direction};
use switchboard_tests::{TestApp, TestTenant};

use crate::fixtures;

const LIST: &str = "api-calls-list";

/// Pages through `query` with limit=200 and returns the call ids in the order served.
async fn all_pages(app: &TestApp, tenant: &TestTenant, query: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", "200"));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let reply = app.get(LIST, &q, Some(&tenant.api_key)).await;
        assert_eq!(reply.status, 200, "{query:?}: {}", reply.body);
        let calls = reply.body["calls"].as_array().unwrap();
        assert_eq!(reply.body["count"].as_u64().unwrap() as usize, calls.len());
        assert!(calls.len() <= 200);
        ids.extend(calls.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        match reply.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
    panic!("paging did not finish within 20 pages for {query:?}");
}

/// The ids a query must return: matching calls, newest first.
fn expected(calls: &[&Call], keep: impl Fn(&Call) -> bool) -> Vec<String> {
    let mut matching: Vec<&&Call> = calls.iter().filter(|c| keep(c)).collect();
    matching.sort_by_key(|c| std::cmp::Reverse(c.started_at));
    matching.iter().map(|c| c.id.clone()).collect()
}

#[tokio::test]
async fn paging_returns_every_matching_call_exactly_once_newest_first() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("paging").await;
    let data = fixtures::calls(&tenant.id, 450);
    app.ctx.calls.insert_many(&data).await.unwrap();
    let calls: Vec<&Call> = data.iter().map(|(c, _)| c).collect();

    let everything = all_pages(&app, &tenant, &[]).await;
    assert_eq!(everything.len(), 450);
    assert_eq!(everything, expected(&calls, |_| true));
    assert_eq!(everything.iter().collect::<HashSet<_>>().len(), 450, "a call was served twice");

    for status in fixtures::STATUSES {
        let got = all_pages(&app, &tenant, &[("status", status.as_str())]).await;
        assert_eq!(got, expected(&calls, |c| c.status == status), "status={}", status.as_str());
        assert_eq!(got.len(), 150);
    }
    for i in 0..4 {
        let agent = switchboard_infra::demo::agent(i).id;
        let got = all_pages(&app, &tenant, &[("agent_id", &agent)]).await;
        assert_eq!(got, expected(&calls, |c| c.agent.as_ref().unwrap().id == agent), "agent {i}");
        assert!(got.len() > 100);
    }
    for direction in fixtures::DIRECTIONS {
        let got = all_pages(&app, &tenant, &[("direction", direction.as_str())]).await;
        assert_eq!(got, expected(&calls, |c| c.direction == direction));
    }
    for department in switchboard_infra::demo::DEPARTMENTS {
        let got = all_pages(&app, &tenant, &[("department", department)]).await;
        assert_eq!(got, expected(&calls, |c| c.department.as_deref() == Some(department)));
    }

    // A date range: calls 100..=299 exactly (bounds are inclusive, to the millisecond).
    let start = shared::calls::model::ts::format(&calls[100].started_at);
    let end = shared::calls::model::ts::format(&calls[299].started_at);
    let got = all_pages(&app, &tenant, &[("start_date", &start), ("end_date", &end)]).await;
    assert_eq!(got, expected(&calls, |c| c.started_at >= calls[100].started_at && c.started_at <= calls[299].started_at));
    assert_eq!(got.len(), 200);

    // Filters combine (one index, the rest filtered) and still page exactly.
    let agent = switchboard_infra::demo::agent(1).id;
    let got = all_pages(
        &app,
        &tenant,
        &[("agent_id", &agent), ("status", "completed"), ("direction", "outbound"), ("start_date", &start)],
    )
    .await;
    let want = expected(&calls, |c| {
        c.agent.as_ref().unwrap().id == agent
            && c.status.as_str() == "completed"
            && c.direction == Direction::Outbound
            && c.started_at >= calls[100].started_at
    });
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[tokio::test]
async fn list_embeds_the_agent_and_the_seed_fields() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("shape").await;
    let data = fixtures::calls(&tenant.id, 3);
    app.ctx.calls.insert_many(&data).await.unwrap();
    let reply = app.get(LIST, &[("limit", "1")], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], true);
    assert_eq!(reply.body["count"], 1);
    let call = &reply.body["calls"][0];
    let newest = &data[2].0;
    assert_eq!(call["id"], newest.id.as_str());
    assert_eq!(call["twilio_call_sid"], newest.provider_call_sid.as_deref().unwrap());
    assert_eq!(call["from_number"], "+14155550199");
    assert_eq!(call["agent"]["full_name"], newest.agent.as_ref().unwrap().full_name.as_str());
    assert_eq!(call["agent"]["email"], newest.agent.as_ref().unwrap().email.as_deref().unwrap());
    assert_eq!(call["started_at"], shared::calls::model::ts::format(&newest.started_at));
    for field in ["direction", "to_number", "status", "duration_seconds", "recording_url", "transcript", "ended_at", "metadata"] {
        assert!(call.get(field).is_some(), "missing {field}");
    }
    assert!(reply.body["next_cursor"].is_string());
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("validation").await;
    let other = app.tenant("validation-other").await;
    app.ctx.calls.insert_many(&fixtures::calls(&tenant.id, 9)).await.unwrap();
    app.ctx.calls.insert_many(&fixtures::calls(&other.id, 5)).await.unwrap();

    let first = app.get(LIST, &[("limit", "2"), ("status", "completed")], Some(&tenant.api_key)).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let foreign = app.get(LIST, &[("limit", "2")], Some(&other.api_key)).await;
    let foreign_cursor = foreign.body["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone();
    tampered.replace_range(0..1, if tampered.starts_with('A') { "B" } else { "A" });

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "201")], "limit"),
        (vec![("limit", "-1")], "limit"),
        (vec![("start_date", "2025-13-45")], "start_date"),
        (vec![("end_date", "last tuesday")], "end_date"),
        (vec![("status", "finished")], "status"),
        (vec![("direction", "up")], "direction"),
        (vec![("agent_id", "not-a-uuid")], "agent_id"),
        (vec![("cursor", "garbage")], "cursor"),
        (vec![("cursor", &tampered), ("status", "completed")], "cursor"),
        (vec![("cursor", &foreign_cursor)], "cursor"),
        // A cursor minted for status=completed replayed without that filter.
        (vec![("cursor", &cursor)], "cursor"),
        (vec![("agent", "x")], "agent"),
    ];
    for (query, field) in cases {
        let reply = app.get(LIST, &query, Some(&tenant.api_key)).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.body);
        assert_eq!(reply.body["success"], false);
        assert_eq!(reply.error_field(), Some(field), "{query:?}: {}", reply.body);
        assert!(!reply.body["error"]["message"].as_str().unwrap().is_empty());
    }
    // The genuine cursor, with its own filter, works.
    let second = app.get(LIST, &[("limit", "2"), ("status", "completed"), ("cursor", &cursor)], Some(&tenant.api_key)).await;
    assert_eq!(second.status, 200, "{}", second.body);
}

#[tokio::test]
async fn a_list_page_costs_one_query_and_no_scan() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("store-cost").await;
    app.ctx.calls.insert_many(&fixtures::calls(&tenant.id, 120)).await.unwrap();
    // Warm the key's rate-limit window (the first request of an hour opens it).
    app.get(LIST, &[("limit", "1")], Some(&tenant.api_key)).await;
    app.store_requests.take();

    let agent = switchboard_infra::demo::agent(2).id;
    let queries: Vec<Vec<(&str, &str)>> = vec![
        vec![("limit", "50")],
        vec![("status", "failed"), ("limit", "200")],
        vec![("agent_id", &agent)],
        vec![("direction", "inbound"), ("start_date", "2025-09-01"), ("end_date", "2025-09-02")],
        vec![("department", "support")],
    ];
    for query in queries {
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.clone();
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let reply = app.get(LIST, &q, Some(&tenant.api_key)).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let used = app.store_requests.take();
            // One write authenticates and counts the request; one Query reads the page.
            assert_eq!(used, HashMap::from([("UpdateItem".to_owned(), 1), ("Query".to_owned(), 1)]), "{q:?}");
            match reply.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
}

#[tokio::test]
async fn tenants_never_see_each_others_calls() {
    let app = TestApp::spawn().await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;
    let a_calls = fixtures::calls(&a.id, 7);
    let b_calls = fixtures::calls(&b.id, 9);
    app.ctx.calls.insert_many(&a_calls).await.unwrap();
    app.ctx.calls.insert_many(&b_calls).await.unwrap();

    let seen: HashSet<String> = all_pages(&app, &a, &[]).await.into_iter().collect();
    let own: HashSet<String> = a_calls.iter().map(|(c, _)| c.id.clone()).collect();
    assert_eq!(seen, own);
    // Filtering by an agent both tenants share still yields only A's calls.
    let agent = switchboard_infra::demo::agent(0).id;
    let reply = app.get(LIST, &[("agent_id", &agent)], Some(&a.api_key)).await;
    for call in reply.body["calls"].as_array().unwrap() {
        assert!(own.contains(call["id"].as_str().unwrap()));
    }
    let b_id = &b_calls[0].0.id;
    let reply = app.get("api-calls-details", &[("call_id", b_id)], Some(&a.api_key)).await;
    assert_eq!(reply.status, 404);
    assert!(!reply.body.to_string().contains(&b_calls[0].0.provider_call_sid.clone().unwrap()));
}

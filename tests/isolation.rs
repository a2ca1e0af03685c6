//! One tenant's CRM hangs; the others' deliveries must not wait for it. A test binary
//! of its own, so that it has the local stack to itself: what it measures is isolation,
//! not the other tests' load.

use std::time::Duration;

use shared::deliveries::dispatch::{REQUEST_TIMEOUT, TENANT_IN_FLIGHT};
use switchboard_tests::{TestApp, crm::*};

#[tokio::test]
async fn a_hanging_crm_never_holds_up_other_tenants_deliveries() {
    let app = TestApp::spawn_with_crm_dispatcher(1.0).await;
    let mut tenants = Vec::new();
    for (n, answer) in [Answer::Hang, Answer::FailFirst(0), Answer::FailFirst(0), Answer::FailFirst(0), Answer::FailFirst(0)]
        .into_iter()
        .enumerate()
    {
        let tenant = app.tenant(&format!("crm-isolation-{n}")).await;
        let crm = Crm::start(answer).await;
        point_webhook_at(&app, &tenant, &crm).await;
        let jobs = committed_events(&app, &tenant, 100).await;
        tenants.push((tenant, crm, jobs));
    }
    // Interleaved, so every batch the dispatcher receives holds the hanging tenant's jobs.
    let mut jobs = Vec::new();
    for i in 0..200 {
        jobs.extend(tenants.iter().map(|(_, _, j)| j[i].clone()));
    }
    assert_eq!(jobs.len(), 1000);
    enqueue(&app, &jobs).await;
    let enqueued = tokio::time::Instant::now();

    let healthy = &tenants[1..];
    let deadline = enqueued + REQUEST_TIMEOUT * 3;
    while healthy.iter().any(|(_, crm, _)| crm.seen(|s| s.accepted.len()) < 200) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrived: Vec<usize> = healthy.iter().map(|(_, crm, _)| crm.seen(|s| s.accepted.len())).collect();
    eprintln!("arrived per healthy tenant after {:?}: {arrived:?}", enqueued.elapsed());
    let mut slowest = Duration::ZERO;
    for (tenant, crm, jobs) in healthy {
        crm.seen(|seen| {
            assert!(seen.refused.is_empty(), "refused: {:?}", seen.refused);
            for job in jobs {
                let at = seen.accepted_at.get(&job.event_id).unwrap_or_else(|| panic!("{:?}: {} never arrived", tenant.id, job.event_id));
                slowest = slowest.max(at.duration_since(enqueued));
                assert_eq!(seen.accepted[&job.event_id], 1);
            }
        });
    }
    let hanging = &tenants[0];
    eprintln!(
        "800 healthy deliveries, slowest {slowest:?} after enqueueing; the hanging CRM got {} requests",
        hanging.1.seen(|s| s.requests.values().sum::<usize>())
    );
    assert!(slowest <= REQUEST_TIMEOUT, "a healthy tenant's event took {slowest:?}, beyond the {REQUEST_TIMEOUT:?} budget");

    // The silent endpoint is paused (visible in its settings), its events kept pending.
    let settings = loop {
        let reply = app.get("api-call-settings", &[], Some(&hanging.0.api_key)).await;
        if !reply.body["settings"]["crm_webhook_paused_until"].is_null() || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(settings.body["settings"]["crm_webhook_paused_until"].is_string(), "{}", settings.body);
    let attempted = app.get("api-webhook-deliveries", &[("status", "pending")], Some(&hanging.0.api_key)).await;
    let pending = attempted.body["deliveries"].as_array().unwrap();
    assert!(!pending.is_empty() && pending.len() <= 2 * TENANT_IN_FLIGHT, "{}", attempted.body);
    for delivery in pending {
        assert_eq!(delivery["last_attempt"]["error"], "timed out", "{delivery}");
    }
}


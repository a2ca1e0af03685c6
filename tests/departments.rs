use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use shared::{departments::queued_prefix, tenants::Scope};
use switchboard_tests::{Reply, TestApp, TestTenant};

const DEPARTMENTS: &str = "api-departments-manage";

fn url(app: &TestApp) -> String {
    format!("{}/{DEPARTMENTS}", app.base_url)
}

async fn create(app: &TestApp, key: &str, body: Value) -> Reply {
    app.request(app.http.post(url(app)).header("x-api-key", key).json(&body)).await
}

async fn update(app: &TestApp, key: &str, body: Value) -> Reply {
    app.request(app.http.put(url(app)).header("x-api-key", key).json(&body)).await
}

async fn delete(app: &TestApp, key: &str, queue_id: &str) -> Reply {
    app.request(app.http.delete(url(app)).query(&[("queue_id", queue_id)]).header("x-api-key", key)).await
}

async fn get_one(app: &TestApp, key: &str, queue_id: &str) -> Reply {
    app.get(DEPARTMENTS, &[("queue_id", queue_id)], Some(key)).await
}

/// Creates a department and returns its `queue_id`.
async fn created(app: &TestApp, tenant: &TestTenant, body: Value) -> String {
    let reply = create(app, &tenant.api_key, body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["department"]["queue_id"].as_str().unwrap().to_owned()
}

/// Whether the department is open at `at`, as `GET ?queue_id&at` reports it.
async fn open_at(app: &TestApp, tenant: &TestTenant, queue_id: &str, at: &str) -> bool {
    let reply = app.get(DEPARTMENTS, &[("queue_id", queue_id), ("at", at)], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200, "{at}: {}", reply.body);
    reply.body["open"].as_bool().unwrap_or_else(|| panic!("no open flag: {}", reply.body))
}

fn seed_example() -> Value {
    json!({
        "name": "support",
        "display_name": "Customer Support",
        "phone_number": "+14155550100",
        "routing_strategy": "longest-idle",
        "business_hours": {
            "monday": {"start": "09:00", "end": "17:00"},
            "tuesday": {"start": "09:00", "end": "17:00"}
        },
        "max_wait_time": 300,
        "music_url": "https://example.com/music.mp3",
        "after_hours_action": "voicemail"
    })
}

/// Open 09:00–17:00 local time every day.
fn every_day_nine_to_five(name: &str, phone_number: &str, timezone: &str) -> Value {
    let day = json!({"start": "09:00", "end": "17:00"});
    let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    json!({
        "name": name,
        "phone_number": phone_number,
        "timezone": timezone,
        "business_hours": days.iter().map(|d| (d.to_string(), day.clone())).collect::<serde_json::Map<_, _>>(),
    })
}

#[tokio::test]
async fn a_department_is_created_listed_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-crud").await;
    let key = &tenant.api_key;

    let mut body = seed_example();
    body["required_skills"] = json!(["billing", "spanish", "billing"]);
    let reply = create(&app, key, body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["success"], true);
    let department = &reply.body["department"];
    let queue_id = department["queue_id"].as_str().unwrap().to_owned();
    assert_eq!(department["name"], "support");
    assert_eq!(department["display_name"], "Customer Support");
    assert_eq!(department["phone_number"], "+14155550100");
    assert_eq!(department["routing_strategy"], "longest-idle");
    assert_eq!(department["required_skills"], json!(["billing", "spanish"]), "deduplicated");
    assert_eq!(department["business_hours"]["tuesday"], json!({"start": "09:00", "end": "17:00"}));
    assert_eq!(department["timezone"], "UTC");
    assert_eq!(department["after_hours_action"], "voicemail");
    assert_eq!(department["enabled"], true);

    let listed = app.get(DEPARTMENTS, &[], Some(key)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["success"], true);
    assert_eq!(listed.body["count"], 1);
    assert_eq!(&listed.body["departments"][0], department);

    let one = get_one(&app, key, &queue_id).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(&one.body["department"], department);
    assert!(one.body["open"].is_boolean(), "{}", one.body);
    // Monday 2025-10-20 10:00 UTC is within the seed's hours, Wednesday is not a listed day.
    assert!(open_at(&app, &tenant, &queue_id, "2025-10-20T10:00:00Z").await);
    assert!(!open_at(&app, &tenant, &queue_id, "2025-10-22T10:00:00Z").await);

    // A partial update changes what it names and keeps the rest.
    let updated = update(&app, key, json!({"queue_id": queue_id, "max_wait_time": 600, "enabled": false})).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["success"], true);
    let after = &updated.body["department"];
    assert_eq!((&after["max_wait_time"], &after["enabled"]), (&json!(600), &json!(false)));
    for kept in ["queue_id", "name", "display_name", "phone_number", "business_hours", "required_skills", "music_url"] {
        assert_eq!(after[kept], department[kept], "{kept}");
    }
    assert_eq!(&get_one(&app, key, &queue_id).await.body["department"], after, "the update is stored");

    let deleted = delete(&app, key, &queue_id).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.body, json!({"success": true, "deleted": true, "queue_id": queue_id}));
    assert_eq!(get_one(&app, key, &queue_id).await.status, 404);
    assert_eq!(delete(&app, key, &queue_id).await.status, 404);
    assert_eq!(app.get(DEPARTMENTS, &[], Some(key)).await.body["count"], 0);

    let audited: Vec<(String, String)> = app
        .ctx
        .audit
        .recent(&tenant.id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.detail["queue_id"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let expected = ["department.delete", "department.update", "department.create"];
    assert_eq!(audited, expected.map(|action| (action.to_owned(), queue_id.clone())));
}

#[tokio::test]
async fn names_and_numbers_are_unique_within_a_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-unique").await;
    let key = &tenant.api_key;
    let support = created(&app, &tenant, json!({"name": "support", "phone_number": "+14155550100"})).await;

    let same_name = create(&app, key, json!({"name": "support", "phone_number": "+14155550101"})).await;
    assert_eq!(same_name.status, 409, "{}", same_name.body);
    assert_eq!(same_name.body["error"]["code"], "conflict");
    let same_number = create(&app, key, json!({"name": "sales", "phone_number": "+14155550100"})).await;
    assert_eq!(same_number.status, 409, "{}", same_number.body);
    assert!(same_number.body["error"]["message"].as_str().unwrap().contains("phone_number"));

    // An update cannot take another department's number or name either.
    let sales = created(&app, &tenant, json!({"name": "sales", "phone_number": "+14155550101"})).await;
    assert_eq!(update(&app, key, json!({"queue_id": sales, "phone_number": "+14155550100"})).await.status, 409);
    assert_eq!(update(&app, key, json!({"queue_id": sales, "name": "support"})).await.status, 409);

    // Another tenant has its own names and numbers.
    let other = app.tenant("departments-unique-other").await;
    created(&app, &other, json!({"name": "support", "phone_number": "+14155550100"})).await;

    // Deleting a department frees its name and number.
    assert_eq!(delete(&app, key, &support).await.status, 200);
    let renamed =
        update(&app, key, json!({"queue_id": sales, "name": "support", "phone_number": "+14155550100"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    created(&app, &tenant, json!({"name": "sales", "phone_number": "+14155550101"})).await;
}

#[tokio::test]
async fn each_bad_field_is_named_in_a_400() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-invalid").await;
    let key = &tenant.api_key;
    let valid = || json!({"name": "support", "phone_number": "+14155550100"});
    let with = |field: &str, value: Value| {
        let mut body = valid();
        body[field] = value;
        body
    };
    let cases = [
        (json!({"phone_number": "+14155550100"}), "name"),
        (with("name", json!("Customer Support")), "name"),
        (with("phone_number", json!("555-0100")), "phone_number"),
        (with("routing_strategy", json!("random")), "routing_strategy"),
        (with("timezone", json!("Mars/Olympus_Mons")), "timezone"),
        (with("business_hours", json!({"monday": {"start": "09:00", "end": "25:00"}})), "business_hours.monday.end"),
        (with("business_hours", json!({"monday": {"start": "9am", "end": "17:00"}})), "business_hours.monday.start"),
        (with("max_wait_time", json!(5)), "max_wait_time"),
        (with("max_wait_time", json!(3601)), "max_wait_time"),
        (with("music_url", json!("music.mp3")), "music_url"),
        (with("after_hours_action", json!("forward")), "after_hours_forward_to"),
        (with("routing_strategy", json!("skill-based")), "required_skills"),
        (with("required_skills", json!(["billing", "Spanish"])), "required_skills[1]"),
        (with("queue_id", json!("0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30")), "queue_id"),
        // Wrong JSON types and unknown fields are named too.
        (with("max_wait_time", json!("300")), "max_wait_time"),
        (with("max_wait", json!(300)), "max_wait"),
    ];
    for (body, field) in cases {
        let reply = create(&app, key, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.body["success"], false);
        assert_eq!(reply.error_field(), Some(field), "{body}: {}", reply.body);
    }

    let malformed = app
        .request(app.http.post(url(&app)).header("x-api-key", key).header("content-type", "application/json").body("{"))
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert_eq!(malformed.body["error"]["code"], "bad_request");

    let queue_id = created(&app, &tenant, valid()).await;
    for body in [json!({"max_wait_time": 600}), json!({"queue_id": "not-a-uuid", "max_wait_time": 600})] {
        let reply = update(&app, key, body.clone()).await;
        assert_eq!((reply.status, reply.error_field()), (400, Some("queue_id")), "{body}: {}", reply.body);
    }
    let reply = update(&app, key, json!({"queue_id": queue_id, "routing_strategy": "skill-based"})).await;
    assert_eq!((reply.status, reply.error_field()), (400, Some("required_skills")), "{}", reply.body);
    let reply = get_one(&app, key, "not-a-uuid").await;
    assert_eq!((reply.status, reply.error_field()), (400, Some("queue_id")), "{}", reply.body);
    let reply = delete(&app, key, "not-a-uuid").await;
    assert_eq!((reply.status, reply.error_field()), (400, Some("queue_id")), "{}", reply.body);
    let reply = app.get(DEPARTMENTS, &[("queue_id", &queue_id), ("at", "2025-03-09 13:30")], Some(key)).await;
    assert_eq!((reply.status, reply.error_field()), (400, Some("at")), "{}", reply.body);
    let reply = app.get(DEPARTMENTS, &[("at", "2025-03-09T13:30:00Z")], Some(key)).await;
    assert_eq!((reply.status, reply.error_field()), (400, Some("at")), "{}", reply.body);

    // Nothing invalid was stored.
    assert_eq!(app.get(DEPARTMENTS, &[], Some(key)).await.body["count"], 1);
}

#[tokio::test]
async fn another_tenants_department_is_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("departments-owner").await;
    let stranger = app.tenant("departments-stranger").await;
    let queue_id = created(&app, &owner, seed_example()).await;

    assert_eq!(get_one(&app, &stranger.api_key, &queue_id).await.status, 404);
    let changed = update(&app, &stranger.api_key, json!({"queue_id": queue_id, "enabled": false})).await;
    assert_eq!(changed.status, 404, "{}", changed.body);
    assert_eq!(delete(&app, &stranger.api_key, &queue_id).await.status, 404);
    assert_eq!(app.get(DEPARTMENTS, &[], Some(&stranger.api_key)).await.body["count"], 0);

    let untouched = get_one(&app, &owner.api_key, &queue_id).await;
    assert_eq!(untouched.body["department"]["enabled"], true, "{}", untouched.body);
}

#[tokio::test]
async fn reading_needs_calls_read_and_writing_needs_settings() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-scopes").await;
    let queue_id = created(&app, &tenant, seed_example()).await;

    let reader = app.key(&tenant.id, &[Scope::CallsRead], 100).await;
    assert_eq!(app.get(DEPARTMENTS, &[], Some(&reader)).await.status, 200);
    assert_eq!(get_one(&app, &reader, &queue_id).await.status, 200);
    let writes = [
        create(&app, &reader, json!({"name": "sales", "phone_number": "+14155550101"})).await,
        update(&app, &reader, json!({"queue_id": queue_id, "enabled": false})).await,
        delete(&app, &reader, &queue_id).await,
    ];
    for reply in writes {
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], "forbidden");
    }

    let admin = app.key(&tenant.id, &[Scope::Settings], 100).await;
    assert_eq!(app.get(DEPARTMENTS, &[], Some(&admin)).await.status, 403, "settings alone does not read");
    assert_eq!(app.get(DEPARTMENTS, &[], None).await.status, 401);
    let patch = app.request(app.http.patch(url(&app)).header("x-api-key", &tenant.api_key).json(&json!({}))).await;
    assert_eq!(patch.status, 405, "{}", patch.body);

    assert_eq!(get_one(&app, &tenant.api_key, &queue_id).await.body["department"]["enabled"], true);
}

#[tokio::test]
async fn new_york_business_hours_follow_the_wall_clock_across_spring_forward() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-new-york").await;
    let queue_id = created(&app, &tenant, every_day_nine_to_five("support", "+12125550100", "America/New_York")).await;

    // Saturday 2025-03-08 is EST (UTC-5): 14:30Z is 09:30.
    assert!(open_at(&app, &tenant, &queue_id, "2025-03-08T14:30:00Z").await, "09:30 EST");
    assert!(!open_at(&app, &tenant, &queue_id, "2025-03-08T13:30:00Z").await, "08:30 EST");
    // Sunday 2025-03-09 is EDT (UTC-4) from 02:00: the same UTC times shift by an hour.
    assert!(!open_at(&app, &tenant, &queue_id, "2025-03-09T12:30:00Z").await, "08:30 EDT");
    assert!(open_at(&app, &tenant, &queue_id, "2025-03-09T13:30:00Z").await, "09:30 EDT");
    assert!(open_at(&app, &tenant, &queue_id, "2025-03-09T09:30:00-04:00").await, "an offset instant");
    assert!(!open_at(&app, &tenant, &queue_id, "2025-03-09T21:00:00Z").await, "17:00 EDT: end is exclusive");
}

#[tokio::test]
async fn berlin_business_hours_follow_the_wall_clock_across_fall_back() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-berlin").await;
    let queue_id =
        created(&app, &tenant, every_day_nine_to_five("kundendienst", "+493012345678", "Europe/Berlin")).await;

    // Saturday 2025-10-25 is CEST (UTC+2): 07:30Z is 09:30.
    assert!(open_at(&app, &tenant, &queue_id, "2025-10-25T07:30:00Z").await, "09:30 CEST");
    // Sunday 2025-10-26 is CET (UTC+1) from 03:00 CEST: the same instant of day is 08:30.
    assert!(!open_at(&app, &tenant, &queue_id, "2025-10-26T07:30:00Z").await, "08:30 CET");
    assert!(open_at(&app, &tenant, &queue_id, "2025-10-26T08:30:00Z").await, "09:30 CET");
}

#[tokio::test]
async fn a_department_with_calls_waiting_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("departments-waiting").await;
    let key = &tenant.api_key;
    let support = created(&app, &tenant, json!({"name": "support", "phone_number": "+14155550100"})).await;
    let sales = created(&app, &tenant, json!({"name": "sales", "phone_number": "+14155550101"})).await;

    // A call waiting in support's queue, stored as the queue stores it (a 13-digit
    // enqueued epoch ms, then the call id).
    let (table, key_item) = app.ctx.tenants.read(&tenant.id);
    let queued_key = [
        ("pk".to_owned(), key_item["pk"].clone()),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("{}1700000000000#{}", queued_prefix(&support), uuid::Uuid::new_v4())),
        ),
    ];
    let db = &app.ctx.aws.dynamodb;
    db.put_item().table_name(table).set_item(Some(queued_key.clone().into())).send().await.unwrap();

    let refused = delete(&app, key, &support).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "conflict");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("waiting"), "{}", refused.body);
    assert_eq!(get_one(&app, key, &support).await.status, 200, "still there");
    // Only its own queue holds a department back.
    assert_eq!(delete(&app, key, &sales).await.status, 200);

    db.delete_item().table_name(table).set_key(Some(queued_key.into())).send().await.unwrap();
    let deleted = delete(&app, key, &support).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(get_one(&app, key, &support).await.status, 404);
}

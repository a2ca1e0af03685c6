use serde_json::json;
use shared::tenants::Scope;
use switchboard_infra::twilio_fake;
use switchboard_tests::TestApp;

const PROVIDERS: &str = "api-providers-manage";

#[tokio::test]
async fn provider_credentials_are_write_only_and_accounts_belong_to_one_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("providers").await;
    let url = format!("{}/{PROVIDERS}", app.base_url);
    let token = "0123456789abcdef0123456789abcdef";
    let account_sid = twilio_fake::sid("AC");
    let created = app
        .request(app.http.post(&url).header("x-api-key", &tenant.api_key).json(&json!({
            "type": "twilio", "account_sid": account_sid, "auth_token": token, "phone_numbers": ["+14155550100"]
        })))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(!created.body.to_string().contains(token), "the token is never echoed");
    assert!(created.body["provider"]["credentials_set_at"].is_string());
    let provider_id = created.body["provider"]["provider_id"].as_str().unwrap().to_owned();

    let listed = app.request(app.http.get(&url).header("x-api-key", &tenant.api_key)).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["count"], 1);
    assert!(!listed.body.to_string().contains(token));
    // The stored token is the one given: it verifies webhooks.
    let stored = app.ctx.providers.webhook_account(&account_sid).await.unwrap().unwrap();
    assert_eq!(stored.tenant_id, tenant.id);
    assert!(!format!("{stored:?}").contains(token), "Debug never prints the token");

    // Another tenant cannot claim the same Twilio account.
    let other = app.tenant("providers-other").await;
    let taken = app
        .request(app.http.post(&url).header("x-api-key", &other.api_key).json(&json!({
            "type": "twilio", "account_sid": account_sid, "auth_token": token
        })))
        .await;
    assert_eq!(taken.status, 409);

    // Partial update keeps the stored token.
    let updated = app
        .request(app.http.put(&url).header("x-api-key", &tenant.api_key).json(&json!({
            "provider_id": provider_id, "phone_numbers": ["+14155550100", "+14155550101"], "active": false
        })))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["provider"]["phone_numbers"].as_array().unwrap().len(), 2);
    assert!(app.ctx.providers.webhook_account(&account_sid).await.unwrap().is_some());

    for (body, field) in [
        (json!({"type": "twilio", "account_sid": "nope", "auth_token": token}), "account_sid"),
        (json!({"type": "vonage", "account_sid": account_sid, "auth_token": token}), "type"),
        (json!({"type": "twilio", "account_sid": twilio_fake::sid("AC"), "auth_token": "short"}), "auth_token"),
        (json!({"type": "twilio", "account_sid": twilio_fake::sid("AC"), "auth_token": token, "phone_numbers": ["555"]}), "phone_numbers[0]"),
    ] {
        let reply = app.request(app.http.post(&url).header("x-api-key", &tenant.api_key).json(&body)).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.error_field(), Some(field), "{}", reply.body);
    }
    let no_settings = app.key(&tenant.id, &[Scope::CallsRead], 100).await;
    assert_eq!(app.request(app.http.get(&url).header("x-api-key", &no_settings)).await.status, 403);

    let deleted = app.request(app.http.delete(format!("{url}?provider_id={provider_id}")).header("x-api-key", &tenant.api_key)).await;
    assert_eq!(deleted.status, 200);
    assert!(app.ctx.providers.webhook_account(&account_sid).await.unwrap().is_none());
    let gone = app.request(app.http.delete(format!("{url}?provider_id={provider_id}")).header("x-api-key", &tenant.api_key)).await;
    assert_eq!(gone.status, 404);
}

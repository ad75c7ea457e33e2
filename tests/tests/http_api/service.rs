//! What the API says of itself: health, readiness, and the OpenAPI
//! document, which must list exactly the routes it serves.

use super::*;

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let s = serve().await;
    let health = s.call("GET", "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = s.call("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let installed: String = scalar(
        &s.c,
        "SELECT extversion FROM pg_extension WHERE extname = 'smsbus'",
        &[],
    )
    .await;
    assert_eq!(ready.json()["extension"], installed.as_str());
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let s = serve().await;
    let answer = s.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let document = answer.json();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{document}"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut operations: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    operations.sort();
    let expected = [
        ("DELETE", "/v1/messages/{id}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/channels"),
        ("GET", "/v1/messages"),
        ("GET", "/v1/messages/{id}"),
        ("GET", "/v1/queue"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/batch"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations, expected);
    // Each one is served: without a key, a 401 (or health's answer), never
    // a 404 or 405.
    for (method, path) in &operations {
        let path = path.replace("{id}", "1");
        let answer = s.call(method, &path, None, None).await;
        let served = if path.starts_with("/v1/") { 401 } else { 200 };
        assert_eq!(answer.status, served, "{method} {path}: {}", answer.body);
    }
    assert_eq!(
        document["paths"]["/v1/messages"]["post"]["parameters"][0]["name"],
        "Idempotency-Key"
    );
    assert!(document["components"]["schemas"]["NewMessage"]["properties"]["to"].is_object());
}

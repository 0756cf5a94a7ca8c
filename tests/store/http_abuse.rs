//! The HTTP API under abuse, driven through its router (no socket): bounded metric labels for
//! any method and path, error answers that never echo what was sent (a property test over every
//! route), RFC 7662's request format, JSON answers from the router itself, 405 before
//! authentication, `no-store` introspection answers, and names without invisible characters.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use loop_token_operator::token::Token;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::http::{ADMIN, INTROSPECT, Store, registration, store};

/// Status, headers and body text of one request through the router.
async fn send(s: &Store, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = s.app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}");
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// The label sets of `/metrics`: its lines without their values.
async fn metric_series(s: &Store) -> (usize, Vec<String>) {
    let (_, _, text) = send(s, get("/metrics")).await;
    let mut series: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_owned())
        .collect();
    series.sort();
    (text.len(), series)
}

#[tokio::test]
async fn http_odd_methods_and_paths_do_not_grow_the_metrics() {
    let s = store().await;
    let odd = |i: usize| {
        let method = Method::from_bytes(format!("M{i}{}", "X".repeat(2000)).as_bytes()).unwrap();
        Request::builder()
            .method(method)
            .uri(format!("/nowhere/{i}/{}", "p".repeat(2000)))
            .body(Body::empty())
            .unwrap()
    };
    let odd_on_a_route = |i: usize| {
        let method = Method::from_bytes(format!("R{i}{}", "Y".repeat(2000)).as_bytes()).unwrap();
        Request::builder()
            .method(method)
            .uri("/v1/tokens")
            .body(Body::empty())
            .unwrap()
    };
    send(&s, odd(0)).await;
    send(&s, odd_on_a_route(0)).await;
    send(&s, get("/healthz")).await;
    send(&s, get("/metrics")).await;
    let (size, series) = metric_series(&s).await;
    for i in 1..50 {
        send(&s, odd(i)).await;
        send(&s, odd_on_a_route(i)).await;
    }
    let (size_after, series_after) = metric_series(&s).await;
    assert_eq!(series, series_after, "new label sets appeared");
    assert!(
        size_after < size + 200,
        "/metrics grew from {size} to {size_after} bytes"
    );
    let (_, _, text) = send(&s, get("/metrics")).await;
    assert!(!text.contains("XXXX") && !text.contains("YYYY") && !text.contains("pppp"));
    assert!(text.contains("method=\"other\""), "{text}");
}

/// Where a test puts a secret in a request.
#[derive(Debug, Clone, Copy)]
enum Place {
    JsonKey,
    OwnerKey,
    Hash,
    Scope,
    Expiry,
    Limit,
    IntrospectHint,
    IntrospectToken,
    RawBody,
    FormKey,
    FormValue,
    PathId,
    QueryKey,
    QueryValue,
    Header,
    Bearer,
    BasicPassword,
    ContentType,
    Method,
}

const PLACES: [Place; 19] = [
    Place::JsonKey,
    Place::OwnerKey,
    Place::Hash,
    Place::Scope,
    Place::Expiry,
    Place::Limit,
    Place::IntrospectHint,
    Place::IntrospectToken,
    Place::RawBody,
    Place::FormKey,
    Place::FormValue,
    Place::PathId,
    Place::QueryKey,
    Place::QueryValue,
    Place::Header,
    Place::Bearer,
    Place::BasicPassword,
    Place::ContentType,
    Place::Method,
];

/// Every route, with a method it answers and a credential it needs.
const ROUTES: [(&str, &str, Option<&str>); 11] = [
    ("PUT", "/v1/tokens/{id}", Some(ADMIN)),
    ("PATCH", "/v1/tokens/{id}", Some(ADMIN)),
    ("GET", "/v1/tokens/{id}", Some(ADMIN)),
    ("DELETE", "/v1/tokens/{id}", Some(ADMIN)),
    ("GET", "/v1/tokens", Some(ADMIN)),
    ("POST", "/v1/introspect", Some(INTROSPECT)),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/openapi.json", None),
    ("GET", "/no/such/{id}", None),
];

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A request to `route` carrying `secret` at `place` (the rest well-formed).
fn abusive(route: usize, place: Place, secret: &str) -> Request<Body> {
    let (method, template, cred) = ROUTES[route];
    let mut path = template.replace("{id}", "tok-1");
    let mut query = String::new();
    let mut body = registration(&Token::mint().unwrap(), &["orders:read"]);
    let mut raw = None;
    let mut content_type = "application/json".to_owned();
    let mut auth = cred.map(|c| format!("Bearer {c}"));
    let mut method = method.to_owned();
    let mut extra = None;
    match place {
        Place::JsonKey => body[secret] = json!(1),
        Place::OwnerKey => body["owner"][secret] = json!("x"),
        Place::Hash => body["hash"] = json!(secret),
        Place::Scope => body["scopes"] = json!(["orders:read", secret]),
        Place::Expiry => body["expiresAt"] = json!(secret),
        Place::Limit => query = format!("limit={}", pct(secret)),
        Place::IntrospectHint => body = json!({"token": 5, "token_type_hint": [secret]}),
        Place::IntrospectToken => body = json!({ "token": secret }),
        Place::RawBody => raw = Some(secret.to_owned()),
        Place::FormKey | Place::FormValue => {
            content_type = "application/x-www-form-urlencoded".to_owned();
            raw = Some(match place {
                Place::FormKey => format!("{}=1&token=x", pct(secret)),
                _ => format!("token={}&client_id={}", pct(secret), pct(secret)),
            });
        }
        Place::PathId => path = template.replace("{id}", &pct(secret)),
        Place::QueryKey => query = format!("{}=1", pct(secret)),
        Place::QueryValue => query = format!("after={}&ownerUid={}", pct(secret), pct(secret)),
        Place::Header => extra = Some(secret.to_owned()),
        Place::Bearer => auth = Some(format!("Bearer {secret}")),
        Place::BasicPassword => auth = Some(basic("loop-api", secret)),
        Place::ContentType => content_type = format!("application/json; charset={secret}"),
        Place::Method => method = secret.to_owned(),
    }
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST))
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    if let Some(v) = extra {
        req = req.header("x-anything", v);
    }
    req.body(Body::from(raw.unwrap_or_else(|| body.to_string())))
        .unwrap()
}

/// Does `text` hold `secret`, or 24 characters of it in a row?
fn echoes(text: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    text.contains(secret)
        || chars
            .windows(24)
            .any(|w| text.contains(&w.iter().collect::<String>()))
}

/// Secrets: a real token, or a long value in the characters a URL, a header and a method can
/// all carry.
fn secrets() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(()).prop_map(|()| Token::mint().unwrap().expose().to_owned()),
        "[A-Za-z0-9_]{70,400}",
    ]
}

#[test]
fn http_error_answers_never_echo_submitted_values() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(store());
    // A fixed seed: the same 256 cases on every run, so the suite stays deterministic (the
    // secrets themselves still include freshly minted tokens).
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 256,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let seen = std::cell::RefCell::new(Vec::new());
    let strategy = (0..ROUTES.len(), 0..PLACES.len(), secrets());
    let outcome = runner.run(&strategy, |(route, place, secret)| {
        seen.borrow_mut().push(secret.clone());
        let req = abusive(route, PLACES[place], &secret);
        let (status, headers, text) = rt.block_on(send(&s, req));
        let case = format!(
            "{} {:?} -> {status}: {text}",
            ROUTES[route].1, PLACES[place]
        );
        // A successful answer may name what the caller chose (a registration's id); an error
        // answer never repeats what was sent.
        prop_assert!(
            status.as_u16() < 400 || !echoes(&text, &secret),
            "body echoes the secret: {case}"
        );
        for (name, value) in &headers {
            let v = String::from_utf8_lossy(value.as_bytes());
            prop_assert!(!echoes(&v, &secret), "header {name} echoes: {case}");
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let (_, _, metrics) = rt.block_on(send(&s, get("/metrics")));
    for secret in seen.borrow().iter() {
        assert!(
            !echoes(&metrics, secret),
            "/metrics holds a submitted value"
        );
    }
}

#[tokio::test]
async fn http_a_token_sent_as_a_key_or_a_long_scope_is_not_echoed() {
    let s = store().await;
    let t = Token::mint().unwrap();
    let mut body = registration(&Token::mint().unwrap(), &["orders:read"]);
    body[t.expose()] = json!(1);
    let (status, v) = s.call("PUT", "/v1/tokens/k", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!v.to_string().contains(t.expose()), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("unknown field"),
        "{v}"
    );
    let long = "a".repeat(60_000);
    let body = registration(&Token::mint().unwrap(), &["orders:read", &long]);
    let (status, v) = s.call("PUT", "/v1/tokens/k", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v.to_string().len() < 1000, "{} bytes", v.to_string().len());
    assert!(v["message"].as_str().unwrap().contains("scopes[1]"), "{v}");
}

fn introspect_form(body: &str, auth: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/v1/introspect")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, auth)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn http_introspection_takes_the_rfc7662_request_format() {
    let s = store().await;
    let t = Token::mint().unwrap();
    s.register("r", &t, &["orders:read"]).await;
    let form = format!(
        "token={}&token_type_hint=access_token&client_id=loop-api",
        t.expose()
    );
    let bearer = format!("Bearer {INTROSPECT}");
    let (status, _, text) = send(&s, introspect_form(&form, &bearer)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["active"].clone(), v["scope"].clone()),
        (json!(true), json!("orders:read"))
    );
    // The credential as the password of HTTP Basic, with any user name.
    let (status, _, text) =
        send(&s, introspect_form(&form, &basic("any-client", INTROSPECT))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["active"],
        true
    );
    let (status, _, _) = send(&s, introspect_form(&form, &basic("x", ADMIN))).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the admin credential may not introspect"
    );
    let (status, _, _) = send(&s, introspect_form(&form, &basic("x", "wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut list = get("/v1/tokens");
    list.headers_mut().insert(
        header::AUTHORIZATION,
        basic("x", INTROSPECT).parse().unwrap(),
    );
    assert_eq!(send(&s, list).await.0, StatusCode::FORBIDDEN);
    // Extra parameters are ignored in JSON too; an unknown token is inactive.
    let (status, v) = s
        .call(
            "POST",
            "/v1/introspect",
            Some(INTROSPECT),
            Some(json!({"token": Token::mint().unwrap().expose(), "client_id": "c", "x": [1]})),
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"active": false})));
    let (status, _, text) = send(&s, introspect_form("token_type_hint=x", &bearer)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("missing field `token`"), "{text}");
}

#[tokio::test]
async fn http_the_router_answers_in_json_and_checks_the_method_first() {
    let s = store().await;
    let (status, headers, text) = send(&s, get("/v1/nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"],
        "not_found"
    );
    for (method, uri, allow) in [
        ("POST", "/v1/tokens", "GET,HEAD"),
        ("POST", "/v1/tokens/t", "PUT,PATCH,DELETE,GET,HEAD"),
        ("GET", "/v1/introspect", "POST"),
        ("DELETE", "/healthz", "GET,HEAD"),
    ] {
        // No credential: the method is checked first.
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let (status, headers, text) = send(&s, req).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {text}"
        );
        assert_eq!(headers[header::ALLOW], allow, "{method} {uri}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], "method_not_allowed", "{method} {uri}");
    }
}

#[tokio::test]
async fn http_an_empty_patch_on_a_revoked_token_is_a_conflict() {
    let s = store().await;
    let t = Token::mint().unwrap();
    s.register("gone", &t, &["orders:read"]).await;
    s.call("DELETE", "/v1/tokens/gone", Some(ADMIN), None).await;
    let (status, v) = s
        .call("PATCH", "/v1/tokens/gone", Some(ADMIN), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn http_every_introspection_answer_is_no_store() {
    let s = store().await;
    let post = |auth: Option<&str>, ct: &str, body: &str| {
        let mut r = Request::builder()
            .method("POST")
            .uri("/v1/introspect")
            .header(header::CONTENT_TYPE, ct);
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, format!("Bearer {a}"));
        }
        r.body(Body::from(body.to_owned())).unwrap()
    };
    let json = "application/json";
    for (req, want) in [
        (post(Some(INTROSPECT), json, r#"{"token":"x"}"#), 200),
        (post(None, json, r#"{"token":"x"}"#), 401),
        (post(Some(ADMIN), json, r#"{"token":"x"}"#), 403),
        (post(Some(INTROSPECT), json, "{"), 400),
        (post(Some(INTROSPECT), "text/plain", "x"), 415),
        (get("/v1/introspect"), 405),
    ] {
        let (status, headers, text) = send(&s, req).await;
        assert_eq!(status.as_u16(), want, "{text}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{want}");
        assert_eq!(headers[header::PRAGMA], "no-cache", "{want}");
    }
}

#[tokio::test]
async fn http_names_refuse_invisible_and_bidi_characters() {
    let s = store().await;
    for name in [
        "pay\u{202E}lanigiro",
        "zero\u{200B}width",
        "joi\u{200D}ner",
        "mark\u{200F}",
        "iso\u{2066}late\u{2069}",
        "bom\u{FEFF}",
        "tag\u{E0041}",
        "soft\u{AD}hyphen",
        "line\u{2028}sep",
        "tab\there",
    ] {
        let mut body = registration(&Token::mint().unwrap(), &["orders:read"]);
        body["name"] = json!(name);
        let (status, v) = s.call("PUT", "/v1/tokens/n", Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {v}");
        assert!(v["message"].as_str().unwrap().contains("invisible"), "{v}");
        let (status, _) = s
            .call(
                "PATCH",
                "/v1/tokens/n",
                Some(ADMIN),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}");
    }
    let mut body = registration(&Token::mint().unwrap(), &["orders:read"]);
    body["name"] = json!("Café Ünïcode 日本 ✓");
    assert_eq!(
        s.call("PUT", "/v1/tokens/n", Some(ADMIN), Some(body))
            .await
            .0,
        StatusCode::CREATED
    );
}

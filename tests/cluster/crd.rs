//! The ApiToken and ApiTokenPolicy CRDs on the real API server: installed with server-side
//! apply, explained by `kubectl explain`, listed with their printer columns, and every invalid
//! spec refused at apply time with the API server's own message.

use crate::support;

use support::with_namespace;

fn token(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

#[tokio::test]
async fn invalid_specs_are_refused_by_the_api_server() {
    with_namespace("crd-validation", |cp, ns| async move {
        support::install_crd(&cp).await;
        let ok = cp.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&token(&ns, "good", "{scopes: [subscriptions:read, customers:write], displayName: Klaviyo sync, rotation: {gracePeriod: 1h30m}}")),
        );
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

        let cases = [
            ("{scopes: []}", "spec.scopes: Invalid value: 0: spec.scopes in body should have at least 1 items"),
            ("{}", "spec.scopes: Required value"),
            ("{scopes: [orders:read, orders:read]}", "spec.scopes[1]: Duplicate value: \"orders:read\""),
            ("{scopes: [orders]}", "spec.scopes[0]: Invalid value: \"orders\": spec.scopes[0] in body should match '^[a-z][a-z0-9_-]{0,62}:(read|write)$'"),
            ("{scopes: [Orders:read]}", "should match '^[a-z][a-z0-9_-]{0,62}:(read|write)$'"),
            ("{scopes: [orders:admin]}", "should match '^[a-z][a-z0-9_-]{0,62}:(read|write)$'"),
            (&format!("{{scopes: [a:read], displayName: {}}}", "x".repeat(101)), "spec.displayName: Too long: may not be more than 100 bytes"),
            ("{scopes: [a:read], displayName: ' padded'}", "spec.displayName in body should match"),
            ("{scopes: [a:read], secret: {name: Bad_Name}}", "spec.secret.name in body should match"),
            ("{scopes: [a:read], secret: {key: 'a/b'}}", "spec.secret.key in body should match"),
            ("{scopes: [a:read], rotation: {gracePeriod: soon}}", "spec.rotation.gracePeriod in body should match"),
            ("{scopes: [a:read], rotation: {gracePeriod: 200h}}", "gracePeriod must be at most 168h"),
            ("{scopes: [a:read], rotation: {every: 30m, gracePeriod: 0s}}", "rotation.every must be at least 1h"),
            ("{scopes: [a:read], rotation: {every: 1h}}", "rotation.every must be longer than rotation.gracePeriod"),
            ("{scopes: [a:read], rotation: {every: 2d}}", "spec.rotation.every in body should match"),
            ("{scopes: [a:read], rotation: {every: 24h}, expiry: {after: 24h}}", "expiry.after must be at least rotation.every + rotation.gracePeriod"),
            ("{scopes: [a:read], expiry: {after: 8761h}}", "expiry.after must be at most 8760h (one year)"),
            ("{scopes: [a:read], expiry: {after: 30m, renew: false}}", "expiry.after must be at least 1h"),
            ("{scopes: [a:read], expiry: {after: 2h}}", "with expiry.renew, expiry.after must be at least 3 x rotation.gracePeriod"),
            ("{scopes: [a:read], expiry: {after: soon}}", "spec.expiry.after in body should match"),
            ("{scopes: [a:read], expiry: {renew: false}}", "spec.expiry.after: Required value"),
            ("{scopes: [a:read], unused: {after: 23h}}", "unused.after must be at least 24h"),
            ("{scopes: [a:read], unused: {after: 8761h}}", "unused.after must be at most 8760h (one year)"),
            ("{scopes: [a:read], unused: {after: 720h, action: Delete}}", "spec.unused.action: Unsupported value: \"Delete\""),
            ("{scopes: [a:read], unused: {action: Warn}}", "spec.unused.after: Required value"),
            ("{scopes: [a:read], rotation: {retireWhenIdle: 30s}}", "rotation.retireWhenIdle must be at least 1m"),
            ("{scopes: [a:read], rotation: {retireWhenIdle: 1h}}", "rotation.retireWhenIdle must be shorter than rotation.gracePeriod"),
            ("{scopes: [a:read], rotation: {gracePeriod: 10m, retireWhenIdle: 10m}}", "rotation.retireWhenIdle must be shorter than rotation.gracePeriod"),
            ("{scopes: [a:read], secret: {labels: {loop.dev/team: 'x'}}}", "keys under loop.dev/ and the key app.kubernetes.io/managed-by are the operator's own"),
            ("{scopes: [a:read], secret: {annotations: {app.kubernetes.io/managed-by: 'x'}}}", "keys under loop.dev/ and the key app.kubernetes.io/managed-by are the operator's own"),
            ("{scopes: [a:read], secret: {labels: {'bad key': 'x'}}}", "spec.secret.labels: a key must be a label key"),
            ("{scopes: [a:read], secret: {labels: {team: 'a b'}}}", "spec.secret.labels: a value must be at most 63 characters"),
            ("{scopes: [a:read], secret: {annotations: {'-x': 'y'}}}", "spec.secret.annotations: a key must be"),
            ("{scopes: [a:read], secret: {key: env, template: {env: 'T=${token}'}}}", "spec.secret.template must not have a key named like spec.secret.key"),
            ("{scopes: [a:read], secret: {template: {token: '${token}'}}}", "spec.secret.template must not have a key named like spec.secret.key"),
            ("{scopes: [a:read], secret: {template: {'a/b': '${token}'}}}", "spec.secret.template: a key must be a valid Secret key"),
            ("{scopes: [a:read], secret: {template: {.env: 'T=${secret}'}}}", "the only placeholders are ${token}, ${tokenId}, ${fingerprint} and ${issuedAt}"),
            ("{scopes: [a:read], secret: {template: {.env: 'T=$${HOME}'}}}", "the only placeholders are"),
            ("{scopes: [a:read], rollout: {targets: []}}", "spec.rollout.targets in body should have at least 1 items"),
            ("{scopes: [a:read], rollout: {}}", "spec.rollout.targets: Required value"),
            ("{scopes: [a:read], rollout: {targets: [{kind: Pod, name: web}]}}", "spec.rollout.targets[0].kind: Unsupported value: \"Pod\""),
            ("{scopes: [a:read], rollout: {targets: [{kind: Deployment, name: Web}]}}", "spec.rollout.targets[0].name in body should match"),
            ("{scopes: [a:read], rollout: {targets: [{kind: Deployment, name: web}, {kind: Deployment, name: web}]}}", "spec.rollout.targets[1]: Duplicate value"),
            ("{scopes: [a:read], rollout: {retire: Later, targets: [{kind: Deployment, name: web}]}}", "spec.rollout.retire: Unsupported value: \"Later\""),
            (&format!("{{scopes: [a:read], rollout: {{targets: [{}]}}}}", (0..17).map(|i| format!("{{kind: Deployment, name: w{i}}}")).collect::<Vec<_>>().join(", ")), "spec.rollout.targets: Too many: 17: must have at most 16 items"),
        ];
        for (i, (spec, expected)) in cases.iter().enumerate() {
            let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&token(&ns, &format!("bad-{i}"), spec)));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "accepted: {spec}");
            assert!(err.contains(expected), "for {spec}: expected {expected:?} in:\n{err}");
        }
        // Aging at its limits is accepted: every just over the grace period, an expiry of a year
        // that covers every + gracePeriod, and an expiry that is not renewed.
        for (name, spec) in [
            ("aging", "{scopes: [a:read], rotation: {every: 720h, gracePeriod: 1h}, expiry: {after: 8760h}}"),
            ("lapsing", "{scopes: [a:read], expiry: {after: 1h, renew: false}}"),
            ("usage", "{scopes: [a:read], unused: {after: 24h}, rotation: {gracePeriod: 2m, retireWhenIdle: 1m}}"),
            ("consumed", "{scopes: [a:read], secret: {labels: {team: shop, example.com/tier: '1'}, annotations: {reloader.stakater.com/match: 'true'}, template: {.env: \"LOOP_TOKEN=${token}\\nID=${tokenId} ${fingerprint} ${issuedAt} $HOME $$5\\n\"}}, rollout: {retire: AfterRollout, targets: [{kind: Deployment, name: shop}, {kind: StatefulSet, name: db}, {kind: DaemonSet, name: agent}]}}"),
        ] {
            let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&token(&ns, name, spec)));
            assert!(out.status.success(), "{spec}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let listed = cp.kubectl_ok(&["get", "apitokens", "-n", &ns, "-o", "name"]);
        let mut listed: Vec<&str> = listed.lines().collect();
        listed.sort_unstable();
        assert_eq!(
            listed,
            ["apitoken.loop.dev/aging", "apitoken.loop.dev/consumed", "apitoken.loop.dev/good", "apitoken.loop.dev/lapsing", "apitoken.loop.dev/usage"],
            "only the valid resources exist"
        );

        // Defaults are applied by the API server.
        let stored = cp.kubectl_ok(&["get", "lat", "good", "-n", &ns, "-o", "jsonpath={.spec.secret.key} {.spec.rotation.gracePeriod}"]);
        assert_eq!(stored, "token 1h30m");
        let renew = cp.kubectl_ok(&["get", "lat", "aging", "-n", &ns, "-o", "jsonpath={.spec.expiry.renew}"]);
        assert_eq!(renew, "true", "expiry.renew defaults to true");
        let action = cp.kubectl_ok(&["get", "lat", "usage", "-n", &ns, "-o", "jsonpath={.spec.unused.action}"]);
        assert_eq!(action, "Warn", "unused.action defaults to Warn");

        // Printer columns and the short name.
        let table = cp.kubectl_ok(&["get", "lat", "-n", &ns]);
        let header = table.lines().next().unwrap_or_default();
        for col in ["NAME", "READY", "SCOPES", "SECRET", "LAST USED", "AGE"] {
            assert!(header.contains(col), "missing column {col}: {header}");
        }
        let wide = cp.kubectl_ok(&["get", "lat", "-n", &ns, "-o", "wide"]);
        let wide_header = wide.lines().next().unwrap_or_default();
        for col in ["FINGERPRINT", "EXPIRES", "NEXT ROTATION"] {
            assert!(wide_header.contains(col), "missing wide column {col}: {wide}");
        }
        assert!(!header.contains("EXPIRES"), "expiry only in -o wide: {header}");
    })
    .await;
}

#[tokio::test]
async fn kubectl_explain_documents_every_field() {
    let cp = support::control_plane().await;
    support::install_crd(&cp).await;
    // The API server publishes a new CRD's OpenAPI a moment after it is Established.
    let spec = support::eventually(60, "kubectl explain to know apitokens", || async {
        let out = cp.kubectl(&["explain", "apitoken.spec"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    // kubectl wraps text to the terminal: compare with whitespace collapsed.
    let flat = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let spec = flat(spec);
    for field in ["displayName", "scopes", "secret", "rotation"] {
        assert!(spec.contains(field), "{field} missing from:\n{spec}");
    }
    assert!(spec.contains("<resource>:read"), "{spec}");
    let grace = flat(cp.kubectl_ok(&["explain", "apitoken.spec.rotation.gracePeriod"]));
    assert!(
        grace.contains("revokes the previous token at once"),
        "{grace}"
    );
    let status = flat(cp.kubectl_ok(&["explain", "apitoken.status.fingerprint"]));
    assert!(status.contains("non-secret"), "{status}");
}

/// The ApiTokenPolicy CRD (cluster-scoped): invalid policies refused at apply time, defaults
/// applied, `kubectl explain` and its printer columns. (Policies select by a label no namespace
/// carries, so they govern none while they exist.)
#[tokio::test]
async fn invalid_policies_are_refused_by_the_api_server() {
    with_namespace("crd-policy", |cp, ns| async move {
        support::install_crd(&cp).await;
        let policy = |name: &str, spec: &str| {
            format!("apiVersion: loop.dev/v1alpha1\nkind: ApiTokenPolicy\nmetadata: {{name: {ns}-{name}}}\nspec: {spec}\n")
        };
        let nobody = "namespaceSelector: {matchLabels: {loop.dev/no-such-label: x}}";
        let ok = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&policy("good", &format!("{{{nobody}, allowedScopes: ['orders:*', customers:write], maxGracePeriod: 30m, expiry: {{required: true, maxAfter: 720h}}}}"))));
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        let cases = [
            ("{}", "spec.namespaceSelector: Required value"),
            (&format!("{{{nobody}, allowedScopes: [orders:admin]}}") as &str, "should match '^[a-z][a-z0-9_-]{0,62}:(read|write|\\*)$'"),
            (&format!("{{{nobody}, allowedScopes: ['*:*']}}"), "should match"),
            (&format!("{{{nobody}, maxGracePeriod: soon}}"), "spec.maxGracePeriod in body should match"),
            (&format!("{{{nobody}, expiry: {{maxAfter: 90d}}}}"), "spec.expiry.maxAfter in body should match"),
            (&format!("{{{nobody}, enforcement: Delete}}"), "Unsupported value: \"Delete\""),
            ("{namespaceSelector: {matchExpressions: [{key: team, operator: In}]}}", "In and NotIn need values"),
            ("{namespaceSelector: {matchExpressions: [{key: team, operator: Exists, values: [a]}]}}", "In and NotIn need values"),
            ("{namespaceSelector: {matchExpressions: [{key: team, operator: Equals, values: [a]}]}}", "Unsupported value: \"Equals\""),
        ];
        for (i, (spec, expected)) in cases.iter().enumerate() {
            let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&policy(&format!("bad-{i}"), spec)));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "accepted: {spec}");
            assert!(err.contains(expected), "for {spec}: expected {expected:?} in:\n{err}");
        }
        let good = format!("{ns}-good");
        let enforcement = cp.kubectl_ok(&["get", "latp", &good, "-o", "jsonpath={.spec.enforcement}"]);
        assert_eq!(enforcement, "Report", "the default");
        let header = cp.kubectl_ok(&["get", "apitokenpolicies", &good]);
        for col in ["NAME", "ENFORCEMENT", "ALLOWED SCOPES", "MAX GRACE", "AGE"] {
            assert!(header.lines().next().unwrap_or_default().contains(col), "missing column {col}: {header}");
        }
        let explained = support::eventually(60, "kubectl explain to know apitokenpolicies", || async {
            let out = cp.kubectl(&["explain", "apitokenpolicy.spec"]);
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .await;
        for field in ["namespaceSelector", "allowedScopes", "maxGracePeriod", "expiry", "enforcement", "any of them allows it"] {
            assert!(explained.contains(field), "{field} missing from:\n{explained}");
        }
        cp.kubectl_ok(&["delete", "apitokenpolicy", &good]);
    })
    .await;
}

//! The local control plane is a real Kubernetes API server: it enforces CRD schemas and CEL
//! rules at apply time, serves watches of custom objects, and its controller-manager collects
//! garbage. Everything the operator's tests rely on is checked here first.

use crate::support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use support::{ControlPlane, with_namespace, within};

const CRD: &str = "widgets.devtest.loop.dev";

async fn install_widget_crd(cp: &ControlPlane) -> ApiResource {
    let path = support::repo_root().join("tests/fixtures/widgets-crd.yaml");
    let out = cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=loop-tests",
        "-f",
        path.to_str().unwrap_or_default(),
    ]);
    assert!(out.contains(CRD), "kubectl apply said: {out}");
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client.clone());
    within(
        60,
        "the CRD to be Established",
        await_condition(crds, CRD, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|e| panic!("watching the CRD failed: {e}"));
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("devtest.loop.dev", "v1", "Widget"),
        "widgets",
    )
}

fn widget(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: devtest.loop.dev/v1\nkind: Widget\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

#[tokio::test]
async fn crd_objects_are_validated_served_and_watched() {
    with_namespace("foundation-crd", |cp, ns| async move {
        let ar = install_widget_crd(&cp).await;
        let api: Api<DynamicObject> = Api::namespaced_with(cp.client.clone(), &ns, &ar);

        // Watch first, then create: the watch must deliver the new object.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch_api = api.clone();
        let watching = tokio::spawn(async move {
            let mut stream = watcher(watch_api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(obj)) = stream.try_next().await {
                if tx.send(obj).is_err() {
                    break;
                }
            }
        });
        let created = cp.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&widget(&ns, "small", "{size: 3, colour: red}")),
        );
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        let seen = within(30, "the watch to deliver widget/small", async {
            loop {
                match rx.recv().await {
                    Some(o) if o.name_any() == "small" => break o,
                    Some(_) => continue,
                    None => panic!("the watch ended"),
                }
            }
        })
        .await;
        assert_eq!(seen.data["spec"]["size"], 3);
        assert_eq!(seen.namespace().as_deref(), Some(ns.as_str()));
        watching.abort();

        // The API server itself refuses what the schema forbids, with its own words.
        let too_big = cp.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&widget(&ns, "big", "{size: 20}")),
        );
        assert!(
            !too_big.status.success(),
            "an out-of-range size was accepted"
        );
        let err = String::from_utf8_lossy(&too_big.stderr);
        assert!(
            err.contains(
                "spec.size: Invalid value: 20: spec.size in body should be less than or equal to 10"
            ),
            "unexpected error text: {err}"
        );
        let bad_colour = cp.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&widget(&ns, "pink", "{size: 1, colour: pink}")),
        );
        let err = String::from_utf8_lossy(&bad_colour.stderr);
        assert!(
            err.contains("spec.colour: Unsupported value: \"pink\""),
            "unexpected error text: {err}"
        );
        let cel = cp.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&widget(&ns, "inverted", "{size: 1, min: 5, max: 2}")),
        );
        let err = String::from_utf8_lossy(&cel.stderr);
        assert!(
            err.contains("min must not exceed max"),
            "unexpected error text: {err}"
        );

        // Nothing rejected was stored.
        let names: Vec<String> = api
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(names, vec!["small".to_owned()]);
    })
    .await;
}

async fn secret_owned_by(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    owner_name: &str,
    owner_uid: &str,
) -> Secret {
    let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), ns);
    let s: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": owner_uid
        }]},
        "stringData": {"k": "v"}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    secrets
        .create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("cannot create secret {name}: {e}"))
}

#[tokio::test]
async fn garbage_collector_removes_secrets_of_deleted_owners() {
    with_namespace("foundation-gc", |cp, ns| async move {
        let cms: Api<ConfigMap> = Api::namespaced(cp.client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), &ns);
        let owner: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "owner"}}))
                .unwrap_or_else(|e| panic!("{e}"));
        let owner = cms
            .create(&PostParams::default(), &owner)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let owner_uid = owner.uid().unwrap_or_default();
        let owned = secret_owned_by(&cp, &ns, "owned", "owner", &owner_uid).await;
        // A bystander without an owner must survive.
        let bystander: Secret =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "bystander"}}))
                .unwrap_or_else(|e| panic!("{e}"));
        secrets
            .create(&PostParams::default(), &bystander)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        cms.delete("owner", &DeleteParams::background())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        within(
            90,
            "the garbage collector to delete secret/owned",
            await_condition(
                secrets.clone(),
                "owned",
                conditions::is_deleted(&owned.uid().unwrap_or_default()),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

        // An owner reference to an object that no longer exists (or never did) is dangling: the
        // collector removes that dependent too.
        let dangling = secret_owned_by(
            &cp,
            &ns,
            "dangling",
            "gone",
            "5f0c1a7e-0000-4000-8000-000000000000",
        )
        .await;
        within(
            90,
            "the garbage collector to delete secret/dangling",
            await_condition(
                secrets.clone(),
                "dangling",
                conditions::is_deleted(&dangling.uid().unwrap_or_default()),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

        assert!(
            secrets
                .get_opt("bystander")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_some()
        );
    })
    .await;
}

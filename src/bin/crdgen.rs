//! Print a CRD as YAML: `cargo run --bin crdgen > crds/apitoken.yaml`, and
//! `cargo run --bin crdgen -- apitokenpolicy > crds/apitokenpolicy.yaml`.

fn main() -> anyhow::Result<()> {
    use loop_token_operator::operator::resource::{crd, policy_crd};
    let which = std::env::args().nth(1);
    let yaml = match which.as_deref() {
        None | Some("apitoken") => crd::crd_yaml()?,
        Some("apitokenpolicy") => policy_crd::crd_yaml()?,
        Some(other) => anyhow::bail!("unknown CRD {other:?}: apitoken or apitokenpolicy"),
    };
    print!("{yaml}");
    Ok(())
}

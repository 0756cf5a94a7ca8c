//! Print the `ApiToken` CRD as YAML: `cargo run --bin crdgen > crds/apitoken.yaml`.

fn main() -> anyhow::Result<()> {
    print!("{}", loop_token_operator::operator::crd::crd_yaml()?);
    Ok(())
}

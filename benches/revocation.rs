//! Revocation visibility: revoke a token through one store process and measure how long until
//! another process, which had the token cached as active, answers `active: false`.
//!
//!   cargo bench --bench revocation -- URL_A URL_B ADMIN INTROSPECT ROUNDS
//!
//! Prints one JSON line: {"rounds", "median_ms", "p99_ms", "max_ms"}.

use std::time::{Duration, Instant};

use loop_token_operator::token::Token;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loop_token_operator::serve::install_crypto_provider();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [a, b, admin, introspect, rounds] = args.as_slice() else {
        anyhow::bail!("usage: revocation URL_A URL_B ADMIN INTROSPECT ROUNDS");
    };
    let rounds: usize = rounds.parse()?;
    let http = reqwest::Client::new();
    let introspect_on = |url: &str, token: &str| {
        http.post(format!("{url}/v1/introspect"))
            .bearer_auth(introspect)
            .json(&json!({ "token": token }))
            .send()
    };
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Token::mint()?;
        let id = format!("revocation-{i}-{}", &t.fingerprint());
        let body = json!({"hash": t.hash(), "name": "revocation probe", "scopes": ["orders:read"],
            "owner": {"cluster": "bench", "namespace": "bench", "name": "probe", "uid": "probe"}});
        http.put(format!("{a}/v1/tokens/{id}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        // B must answer active first (and so hold it in its cache).
        loop {
            let v: Value = introspect_on(b, t.expose()).await?.json().await?;
            if v["active"] == true {
                break;
            }
        }
        let v: Value = introspect_on(b, t.expose()).await?.json().await?;
        anyhow::ensure!(v["active"] == true, "B lost the token");
        http.delete(format!("{a}/v1/tokens/{id}"))
            .bearer_auth(admin)
            .send()
            .await?
            .error_for_status()?;
        let revoked = Instant::now();
        loop {
            let v: Value = introspect_on(b, t.expose()).await?.json().await?;
            if v["active"] == false {
                break;
            }
            anyhow::ensure!(
                revoked.elapsed() < Duration::from_secs(10),
                "not revoked on B after 10 s"
            );
        }
        samples.push(revoked.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{}",
        json!({"rounds": rounds, "median_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": samples[samples.len() - 1]})
    );
    Ok(())
}

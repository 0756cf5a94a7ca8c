//! Benchmark fixture: register N tokens directly in a store database (SQLite file or
//! PostgreSQL URL) and write sample plaintexts for the load generator.
//!
//!   cargo bench --bench seed -- DATABASE_URL TOKENS OUT_DIR
//!
//! Writes OUT_DIR/active.txt (up to 10,000 active tokens), OUT_DIR/revoked.txt (revoked ones)
//! and OUT_DIR/malformed.txt. These are throwaway tokens of a benchmark database.

use std::io::Write;
use std::time::Instant;

use loop_token_operator::store::model::{Change, NewToken, Owner, TokenId};
use loop_token_operator::store::repo::{self, PoolSettings};
use loop_token_operator::store::scopes::ScopeSet;
use loop_token_operator::token::Token;

const SAMPLE: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [url, n, out] = args.as_slice() else {
        anyhow::bail!("usage: seed DATABASE_URL TOKENS OUT_DIR");
    };
    let n: usize = n.parse()?;
    let settings = PoolSettings {
        max_connections: 8,
        ..PoolSettings::default()
    };
    let opened = repo::open(url, &settings).await?;
    let repo = opened.repo;
    let scopes = ScopeSet::parse(["orders:read", "subscriptions:read"])?;
    let start = Instant::now();
    let mut active = Vec::new();
    let mut revoked = Vec::new();
    let mut pending = Vec::new();
    for i in 0..n {
        let t = Token::mint()?;
        let new = NewToken {
            id: TokenId::parse(&format!("bench-{i:07}"))?,
            hash: t.hash(),
            name: format!("bench token {i}"),
            scopes: scopes.clone(),
            owner: Owner {
                cluster: "bench".into(),
                namespace: "bench".into(),
                name: format!("t{}", i % 1000),
                uid: format!("uid-{}", i % 1000),
            },
            expires_at_ms: None,
        };
        let r = repo.clone();
        pending.push(tokio::spawn(async move {
            r.register(&new, Change::default(), 0).await
        }));
        if pending.len() == 64 {
            for p in pending.drain(..) {
                p.await??;
            }
        }
        // Every 100th token is revoked later; keep samples of both kinds.
        if i % 100 == 99 {
            revoked.push((format!("bench-{i:07}"), t.expose().to_owned()));
        } else if active.len() < SAMPLE {
            active.push(t.expose().to_owned());
        }
    }
    for p in pending {
        p.await??;
    }
    for (id, _) in &revoked {
        repo.revoke(&TokenId::parse(id)?, Change::default(), 1)
            .await?;
    }
    let write = |name: &str, lines: &[String]| -> anyhow::Result<()> {
        let mut f = std::fs::File::create(std::path::Path::new(out).join(name))?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    };
    write("active.txt", &active)?;
    write(
        "revoked.txt",
        &revoked
            .iter()
            .take(SAMPLE)
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>(),
    )?;
    // Malformed: right length and prefix, wrong checksum; refused before any lookup.
    let malformed: Vec<String> = active
        .iter()
        .take(SAMPLE)
        .map(|t| {
            let mut m = t.clone();
            m.pop();
            m.push(if t.ends_with('A') { 'B' } else { 'A' });
            m
        })
        .collect();
    write("malformed.txt", &malformed)?;
    eprintln!(
        "seeded {n} tokens ({} revoked) in {:.1}s",
        revoked.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

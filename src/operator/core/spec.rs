//! The spec, parsed: defaults applied and durations read ([`desired`]). Pure.

use std::collections::BTreeSet;

use jiff::SignedDuration;

use crate::operator::core::schedule::{Aging, Expiry};
use crate::operator::core::vocabulary::{Consumers, Desired, SpecProblem, Unused};
use crate::operator::resource::crd::ApiToken;

/// Parse a Go-style duration (`1h30m`, `90s`, `0s`, `0`) of the spec field `field`.
pub fn parse_duration(field: &'static str, s: &str) -> Result<SignedDuration, SpecProblem> {
    if s == "0" {
        return Ok(SignedDuration::ZERO);
    }
    match s.parse::<SignedDuration>() {
        Ok(d) if !d.is_negative() => Ok(d),
        _ => Err(SpecProblem::Duration {
            field,
            value: s.to_owned(),
        }),
    }
}

fn aging(token: &ApiToken) -> Result<Aging, SpecProblem> {
    let spec = &token.spec;
    let every = spec
        .rotation
        .every
        .as_deref()
        .map(|e| parse_duration("rotation.every", e))
        .transpose()?;
    let expiry = match &spec.expiry {
        Some(e) => Some(Expiry {
            after: parse_duration("expiry.after", &e.after)?,
            renew: e.renew,
        }),
        None => None,
    };
    Ok(Aging { every, expiry })
}

fn unused_rule(token: &ApiToken) -> Result<Option<Unused>, SpecProblem> {
    token
        .spec
        .unused
        .as_ref()
        .map(|u| {
            Ok(Unused {
                after: parse_duration("unused.after", &u.after)?,
                action: u.action,
            })
        })
        .transpose()
}

/// Apply defaults to a spec.
pub fn desired(
    token: &ApiToken,
    name: &str,
    rotation_request: Option<&str>,
) -> Result<Desired, SpecProblem> {
    let spec = &token.spec;
    let scopes: BTreeSet<&str> = spec.scopes.iter().map(String::as_str).collect();
    if scopes.is_empty() {
        return Err(SpecProblem::NoScopes);
    }
    Ok(Desired {
        secret_name: spec.secret.name.clone().unwrap_or_else(|| name.to_owned()),
        secret_key: spec.secret.key.clone(),
        display_name: spec.display_name.clone().unwrap_or_else(|| name.to_owned()),
        scopes: scopes.into_iter().map(str::to_owned).collect(),
        grace: parse_duration("rotation.gracePeriod", &spec.rotation.grace_period)?,
        rotation_request: rotation_request.map(str::to_owned),
        aging: aging(token)?,
        unused: unused_rule(token)?,
        retire_when_idle: spec
            .rotation
            .retire_when_idle
            .as_deref()
            .map(|w| parse_duration("rotation.retireWhenIdle", w))
            .transpose()?,
        consumers: Consumers::of(token),
    })
}

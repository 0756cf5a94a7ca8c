//! Scopes (`<resource>:read` / `<resource>:write`) and the store's scope catalogue.
//!
//! Pure code. The catalogue is configuration (`--scopes-file`), with a built-in default that
//! mirrors the Loop Admin API's resources. A resource is either read-only or read-and-write, as
//! in Loop's own token editor; `write` implies `read` for the Loop API, but the store keeps the
//! scopes exactly as registered so that introspection answers with what the owner asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How much a resource allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One scope, `<resource>:<access>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub resource: String,
    pub access: Access,
}

/// The rule for a scope, in words.
pub const SCOPE_RULE: &str = "of the form <resource>:read or <resource>:write (resource: lowercase letters, digits, '-' or '_', starting with a letter, at most 63 characters)";

/// Why a string is not a scope. The message quotes at most [`MAX_QUOTED`] characters of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {:?} is not {SCOPE_RULE}", quoted(.0))]
pub struct ScopeSyntaxError(pub String);

/// Longest scope quoted in an error (a valid scope is at most 69 characters).
pub const MAX_QUOTED: usize = 69;

fn quoted(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The regular expression the CRD schema uses for the same rule.
pub const SCOPE_PATTERN: &str = "^[a-z][a-z0-9_-]{0,62}:(read|write)$";

impl std::str::FromStr for Scope {
    type Err = ScopeSyntaxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScopeSyntaxError(s.to_owned());
        let (resource, access) = s.split_once(':').ok_or_else(err)?;
        let access = match access {
            "read" => Access::Read,
            "write" => Access::Write,
            _ => return Err(err()),
        };
        if !valid_resource(resource) {
            return Err(err());
        }
        Ok(Scope {
            resource: resource.to_owned(),
            access,
        })
    }
}

fn valid_resource(r: &str) -> bool {
    let mut bytes = r.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && r.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.access.as_str())
    }
}

/// A normalised scope set: sorted, without duplicates. Serialised as a list of strings; stored
/// and introspected as one space-separated string (RFC 7662 `scope`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeSyntaxError> {
        let mut v = items
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<Scope>, _>>()?;
        v.sort();
        v.dedup();
        Ok(ScopeSet(v))
    }

    /// Parse the stored, space-separated form.
    pub fn from_joined(s: &str) -> Result<Self, ScopeSyntaxError> {
        Self::parse(s.split_ascii_whitespace())
    }

    pub fn joined(&self) -> String {
        self.0
            .iter()
            .map(Scope::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a scope is refused by the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeRejection {
    #[error("unknown scope {scope:?}: the store knows no resource {resource:?} (known: {known})")]
    UnknownResource {
        scope: String,
        resource: String,
        known: String,
    },
    #[error("scope {scope:?} is not allowed: resource {resource:?} is read-only")]
    ReadOnly { scope: String, resource: String },
}

impl ScopeRejection {
    /// The scope string that was refused.
    pub fn scope(&self) -> &str {
        match self {
            ScopeRejection::UnknownResource { scope, .. }
            | ScopeRejection::ReadOnly { scope, .. } => scope,
        }
    }
}

/// The resources the store accepts and the most access each allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub resources: BTreeMap<String, Access>,
}

/// A scopes file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot read scopes file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "scopes file {path} is not valid JSON of the form {{\"resources\": {{\"<resource>\": \"read\"|\"write\"}}}}: {source}"
    )]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "scopes file {path}: resource name {resource:?} is invalid (lowercase letters, digits, '-' or '_', starting with a letter)"
    )]
    BadResource { path: String, resource: String },
    #[error("scopes file {path} lists no resources")]
    Empty { path: String },
}

impl Default for Catalogue {
    /// The Loop Admin API's resources. Reporting and payment data are read-only, as in Loop.
    fn default() -> Self {
        use Access::{Read, Write};
        let resources = [
            ("bundles", Write),
            ("customers", Write),
            ("discounts", Write),
            ("orders", Write),
            ("payments", Read),
            ("products", Write),
            ("reports", Read),
            ("settings", Read),
            ("subscriptions", Write),
            ("webhooks", Write),
        ];
        Catalogue {
            resources: resources
                .into_iter()
                .map(|(r, a)| (r.to_owned(), a))
                .collect(),
        }
    }
}

impl Catalogue {
    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: p.clone(),
            source,
        })?;
        let cat: Catalogue =
            serde_json::from_str(&text).map_err(|source| CatalogueError::Parse {
                path: p.clone(),
                source,
            })?;
        if cat.resources.is_empty() {
            return Err(CatalogueError::Empty { path: p });
        }
        if let Some(bad) = cat.resources.keys().find(|r| !valid_resource(r)) {
            return Err(CatalogueError::BadResource {
                path: p,
                resource: bad.clone(),
            });
        }
        Ok(cat)
    }

    /// Check every scope; the first refused one is reported.
    pub fn check(&self, scopes: &ScopeSet) -> Result<(), ScopeRejection> {
        for s in scopes.iter() {
            match self.resources.get(&s.resource) {
                None => {
                    return Err(ScopeRejection::UnknownResource {
                        scope: s.to_string(),
                        resource: s.resource.clone(),
                        known: self
                            .resources
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                Some(Access::Read) if s.access == Access::Write => {
                    return Err(ScopeRejection::ReadOnly {
                        scope: s.to_string(),
                        resource: s.resource.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let s = ScopeSet::parse(["orders:write", "customers:read", "orders:write"]).unwrap();
        assert_eq!(s.joined(), "customers:read orders:write");
        assert_eq!(ScopeSet::from_joined(&s.joined()).unwrap(), s);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "orders",
            "orders:admin",
            ":read",
            "Orders:read",
            "1x:read",
            "a b:read",
            "orders:read:x",
            "",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert!(format!("{}:read", "a".repeat(63)).parse::<Scope>().is_ok());
        assert!(format!("{}:read", "a".repeat(64)).parse::<Scope>().is_err());
    }

    #[test]
    fn catalogue_rejects_unknown_and_read_only() {
        let cat = Catalogue::default();
        assert!(
            cat.check(&ScopeSet::parse(["subscriptions:write", "reports:read"]).unwrap())
                .is_ok()
        );
        let e = cat
            .check(&ScopeSet::parse(["widgets:read"]).unwrap())
            .unwrap_err();
        assert_eq!(e.scope(), "widgets:read");
        assert!(e.to_string().contains("widgets"));
        let e = cat
            .check(&ScopeSet::parse(["reports:write"]).unwrap())
            .unwrap_err();
        assert!(matches!(e, ScopeRejection::ReadOnly { .. }));
    }

    #[test]
    fn catalogue_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scopes.json");
        std::fs::write(
            &p,
            r#"{"resources": {"widgets": "write", "audit": "read"}}"#,
        )
        .unwrap();
        let cat = Catalogue::load(&p).unwrap();
        assert!(
            cat.check(&ScopeSet::parse(["widgets:write"]).unwrap())
                .is_ok()
        );
        std::fs::write(&p, r#"{"resources": {"Bad": "read"}}"#).unwrap();
        assert!(matches!(
            Catalogue::load(&p),
            Err(CatalogueError::BadResource { .. })
        ));
        std::fs::write(&p, r#"{"resources": {}}"#).unwrap();
        assert!(matches!(
            Catalogue::load(&p),
            Err(CatalogueError::Empty { .. })
        ));
        std::fs::write(&p, r#"{"resources": {"a": "admin"}}"#).unwrap();
        assert!(matches!(
            Catalogue::load(&p),
            Err(CatalogueError::Parse { .. })
        ));
    }
}

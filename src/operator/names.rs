//! Names every part agrees on (DESIGN.md §3) and the operator's own constants, in one place.

/// Annotation whose every new value asks for one rotation.
pub const ROTATE_ANNOTATION: &str = "loop.dev/rotate";
/// Finalizer that holds deletion until every token of the resource is revoked.
pub const FINALIZER: &str = "loop.dev/revoke";
/// Label on every Secret the operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "loop-token-operator";
/// Label naming the ApiToken a Secret belongs to.
pub const API_TOKEN_LABEL: &str = "loop.dev/api-token";
/// Server-side apply field manager of the operator.
pub const FIELD_MANAGER: &str = "loop-token-operator";
/// Default key of the token in its Secret.
pub const DEFAULT_SECRET_KEY: &str = "token";
/// Default grace period of the previous token after a rotation.
pub const DEFAULT_GRACE_PERIOD: &str = "1h";

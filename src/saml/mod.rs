//! SAML 2.0 identity providers (issue 16), being built. What is here:
//! - what every message passes before any XML library or signature check sees it: the
//!   bindings' bounded decoding ([`binding`]) and the strict shape screen ([`screen`]);
//! - the checks a verified Response must pass ([`rules`]);
//! - the messages gatehouse writes ([`messages`]: the `AuthnRequest`, the SP metadata).
//!
//! Signature verification and the login flow come next (samael over xmlsec1, behind a cargo
//! feature; see the note).

pub mod binding;
pub mod messages;
pub mod rules;
pub mod screen;

//! One configured SAML IdP at run time: its metadata (read at start and every
//! `metadata_refresh_seconds`; a failed read keeps the last good copy), the SP's own names
//! for it (entityID, ACS and SLO URLs) and key, the `AuthnRequest` it is sent, and the
//! verification of what it answers.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::binding::{Outgoing, redirect_url};
use super::messages::{self, AuthnRequest, SpMetadata};
use super::metadata::{self, IdpMetadata, MetadataError};
use super::response::{self, SamlError, Verification};
use super::rules::ResponseFacts;
use super::verify::{SpKey, cert_der_from_pem, check_certificate};
use crate::config::IdpConfig;
use crate::provisioning::EmailTrust;

pub const ACS_PATH: &str = "/auth/saml/acs";
pub const SLO_PATH: &str = "/auth/saml/slo";

/// `/auth/saml/{idp}/metadata`: also the SP's entityID for that IdP.
pub fn metadata_path(idp: &str) -> String {
    format!("/auth/saml/{idp}/metadata")
}

/// While no copy has ever loaded, retry this often.
const FIRST_LOAD_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("idp {idp:?}: {what}: {why}")]
    File {
        idp: String,
        what: String,
        why: String,
    },
    #[error("idp {idp:?}: metadata: {error}")]
    Metadata { idp: String, error: String },
}

pub struct SamlIdp {
    pub config: IdpConfig,
    pub email_trust: EmailTrust,
    pub sp_entity_id: String,
    pub acs_url: String,
    pub slo_url: String,
    sp_key: Option<SpKey>,
    /// Base64 DER, for the SP metadata.
    sp_cert: Option<String>,
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<IdpMetadata>>>,
    /// Issuers of the other configured IdPs (OIDC issuers, pinned SAML entityIDs): identities
    /// are `(issuer, subject)`, so metadata claiming one of them is refused.
    reserved_issuers: Vec<String>,
}

impl std::fmt::Debug for SamlIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlIdp")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl SamlIdp {
    /// Reads the SP key and certificate, and the metadata when it is a file (a bad file is a
    /// configuration error; a URL is fetched by [`Self::keep_fresh`]).
    pub fn new(
        config: IdpConfig,
        email_trust: EmailTrust,
        reserved_issuers: Vec<String>,
        public_origin: &str,
        http: reqwest::Client,
    ) -> Result<Self, SetupError> {
        let file_error = |what: &str, why: String| SetupError::File {
            idp: config.name.clone(),
            what: what.to_owned(),
            why,
        };
        let sp_key = match &config.sp_key_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| file_error("sp_key_file", format!("{}: {e}", path.display())))?;
                Some(SpKey::from_pem(&pem).map_err(|e| file_error("sp_key_file", e.to_string()))?)
            }
            None => None,
        };
        let sp_cert = match &config.sp_cert_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| file_error("sp_cert_file", format!("{}: {e}", path.display())))?;
                let der = cert_der_from_pem(&pem)
                    .map_err(|e| file_error("sp_cert_file", e.to_string()))?;
                Some(STANDARD.encode(der))
            }
            None => None,
        };
        let idp = Self {
            sp_entity_id: format!("{public_origin}{}", metadata_path(&config.name)),
            acs_url: format!("{public_origin}{ACS_PATH}"),
            slo_url: format!("{public_origin}{SLO_PATH}"),
            config,
            email_trust,
            sp_key,
            sp_cert,
            http,
            metadata: RwLock::new(None),
            reserved_issuers,
        };
        if let Some(path) = &idp.config.metadata_file {
            std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|xml| idp.accept(&xml).map_err(|e| e.to_string()))
                .map_err(|error| SetupError::Metadata {
                    idp: idp.config.name.clone(),
                    error: format!("{}: {error}", path.display()),
                })?;
        }
        Ok(idp)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn metadata(&self) -> Option<Arc<IdpMetadata>> {
        self.metadata.read().ok().and_then(|m| m.clone())
    }

    /// Parses `xml` and keeps it when it may serve: besides [`metadata::parse`]'s rules, its
    /// entityID is the pinned one (or the current copy's), no other IdP's issuer, and every
    /// signing certificate is usable (one bad certificate would fail every login).
    fn accept(&self, xml: &[u8]) -> Result<(), MetadataError> {
        let parsed = metadata::parse(xml)?;
        let found = parsed.entity_id.clone();
        let taken = |why| {
            Err(MetadataError::EntityId {
                found: found.clone(),
                why,
            })
        };
        if let Some(pinned) = &self.config.entity_id
            && *pinned != parsed.entity_id
        {
            return taken("not the entity_id configured for this IdP");
        }
        if self.reserved_issuers.contains(&parsed.entity_id) {
            return taken("which is another configured identity provider's issuer");
        }
        if let Some(current) = self.metadata()
            && current.entity_id != parsed.entity_id
        {
            return taken("not the one this IdP had (restart to accept a new entityID)");
        }
        for der in &parsed.signing_certs {
            check_certificate(der).map_err(|_| MetadataError::BadCertificate)?;
        }
        self.keep(Arc::new(parsed));
        Ok(())
    }

    fn keep(&self, metadata: Arc<IdpMetadata>) {
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some(metadata);
        }
    }

    /// Takes `previous`'s metadata (a config reload) when this IdP has none yet and reads it
    /// from the same place.
    pub fn adopt_metadata(&self, previous: &SamlIdp) {
        let same_source = self.config.metadata_url == previous.config.metadata_url
            && self.config.metadata_file == previous.config.metadata_file;
        if same_source
            && self.metadata().is_none()
            && let Some(copy) = previous.metadata()
        {
            self.keep(copy);
        }
    }

    /// Reads the metadata again; on failure the last good copy stays.
    pub async fn refresh(&self) -> Result<(), MetadataError> {
        let xml = match (&self.config.metadata_url, &self.config.metadata_file) {
            (Some(url), _) => {
                let fetched = tokio::time::timeout(Duration::from_secs(10), async {
                    let response = self
                        .http
                        .get(url.clone())
                        .send()
                        .await?
                        .error_for_status()?;
                    response.bytes().await
                })
                .await;
                match fetched {
                    Ok(Ok(bytes)) => bytes.to_vec(),
                    Ok(Err(e)) => return Err(MetadataError::Xml(format!("fetching {url}: {e}"))),
                    Err(_) => return Err(MetadataError::Xml(format!("fetching {url}: timed out"))),
                }
            }
            (None, Some(path)) => std::fs::read(path)
                .map_err(|e| MetadataError::Xml(format!("{}: {e}", path.display())))?,
            (None, None) => return Ok(()),
        };
        self.accept(&xml)
    }

    /// Loads the metadata now and then every `metadata_refresh_seconds`, until this IdP is
    /// replaced (a reload) and dropped.
    pub fn keep_fresh(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = Duration::from_secs(self.config.metadata_refresh_seconds.max(1));
        tokio::spawn(async move {
            loop {
                let Some(idp) = weak.upgrade() else { return };
                let wait = match idp.refresh().await {
                    Ok(()) => every,
                    Err(e) => {
                        let kept = idp.metadata().is_some();
                        tracing::warn!(idp = %idp.name(), error = %e, kept_last_good = kept, "SAML metadata refresh failed");
                        if kept {
                            every
                        } else {
                            every.min(FIRST_LOAD_RETRY)
                        }
                    }
                };
                drop(idp);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// The SP metadata to hand the IdP's administrator.
    pub fn sp_metadata(&self) -> String {
        messages::sp_metadata(&SpMetadata {
            entity_id: &self.sp_entity_id,
            acs_url: &self.acs_url,
            slo_url: Some(&self.slo_url),
            certificate: self.sp_cert.as_deref(),
            requests_signed: self.sp_key.is_some(),
        })
    }

    /// The `AuthnRequest`'s ID and the URL to send the browser to.
    pub fn authn_request(
        &self,
        relay_state: &str,
        force_authn: bool,
        authn_contexts: &[String],
        now: i64,
    ) -> Result<(String, String), SamlError> {
        let metadata = self.metadata().ok_or(SamlError::NoMetadata)?;
        let sent = messages::authn_request(
            &AuthnRequest {
                destination: &metadata.sso_url,
                acs_url: &self.acs_url,
                sp_entity_id: &self.sp_entity_id,
                force_authn,
                authn_contexts,
            },
            now,
        )
        .map_err(|e| SamlError::Signing(format!("request ID: {e}")))?;
        let url = redirect_url(
            &self.outgoing(&metadata.sso_url, Some(relay_state)),
            "SAMLRequest",
            &sent.xml,
        )
        .map_err(|e| SamlError::Signing(e.to_string()))?;
        Ok((sent.id, url))
    }

    pub fn outgoing<'a>(
        &'a self,
        destination: &'a str,
        relay_state: Option<&'a str>,
    ) -> Outgoing<'a> {
        Outgoing {
            destination,
            issuer: &self.sp_entity_id,
            relay_state,
            key: self.sp_key.as_ref(),
        }
    }

    /// Verifies a screened Response (blocking: xmlsec).
    pub fn verify(&self, xml: &str) -> Result<ResponseFacts, SamlError> {
        let metadata = self.metadata().ok_or(SamlError::NoMetadata)?;
        response::verify(
            xml,
            &Verification {
                certs: &metadata.signing_certs,
                allow_sha1: self.config.allow_sha1,
                sp_key: self.sp_key.as_ref(),
            },
        )
    }

    /// Checks a redirect-binding query signature against the metadata certificates.
    pub fn verify_query_signature(
        &self,
        signature: &(String, String, Vec<u8>),
    ) -> Result<(), super::verify::VerifyError> {
        let metadata = self
            .metadata()
            .ok_or(super::verify::VerifyError::Unsigned)?;
        let (signed, alg, bytes) = signature;
        super::verify::verify_redirect(
            signed,
            alg,
            bytes,
            &metadata.signing_certs,
            self.config.allow_sha1,
        )
    }
}

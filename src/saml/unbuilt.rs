//! Stand-ins for [`super::verify`] and [`super::decrypt`] in a build without the `saml`
//! feature. Configuration refuses `kind = "saml"` there, so these are never reached; they
//! refuse, should they be.

pub mod verify {
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum VerifyError {
        #[error("this gatehouse was built without SAML support")]
        NotBuilt,
        #[error("no signature")]
        Unsigned,
        #[error("the redirect binding's SigAlg {0:?} is not allowed")]
        SigAlg(String),
    }

    /// Never constructed.
    #[derive(Debug)]
    pub struct SpKey(());

    impl SpKey {
        pub fn from_pem(_pem: &[u8]) -> Result<Self, VerifyError> {
            Err(VerifyError::NotBuilt)
        }

        pub fn sign_redirect(&self, _signed: &str) -> Result<Vec<u8>, VerifyError> {
            Err(VerifyError::NotBuilt)
        }
    }

    pub fn check_certificate(_: &[u8]) -> Result<(), VerifyError> {
        Err(VerifyError::NotBuilt)
    }

    pub fn cert_der_from_pem(_: &[u8]) -> Result<Vec<u8>, VerifyError> {
        Err(VerifyError::NotBuilt)
    }

    pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

    pub fn reduce_to_signed(_: &str, _: &[Vec<u8>], _: bool) -> Result<String, VerifyError> {
        Err(VerifyError::NotBuilt)
    }

    pub fn verify_redirect(
        _: &str,
        _: &str,
        _: &[u8],
        _: &[Vec<u8>],
        _: bool,
    ) -> Result<(), VerifyError> {
        Err(VerifyError::NotBuilt)
    }
}

pub mod decrypt {
    use super::verify::SpKey;

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum DecryptError {
        #[error("this gatehouse was built without SAML support")]
        NotBuilt,
    }

    pub fn decrypt(
        _: roxmltree::Node<'_, '_>,
        _: Option<&SpKey>,
        _: bool,
    ) -> Result<String, DecryptError> {
        Err(DecryptError::NotBuilt)
    }
}

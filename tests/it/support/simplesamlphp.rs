//! A real SAML IdP: Debian's SimpleSAMLphp under `php -S`, configured from
//! `tests/saml-idp/config` (users alice/alicepw and bob/bobpw of bigcorp.test; signed
//! Responses and Assertions, RSA-SHA256; persistent NameIDs; signed logout messages). It
//! listens on 127.0.0.2 so its cookies never mix with gatehouse's on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::client::send_bytes;
use super::saml::KeyPair;

pub const HOST: &str = "127.0.0.2";
const WWW: &str = "/usr/share/simplesamlphp/www";

/// Where the SP (gatehouse) is, as the IdP must know it.
pub struct SpUrls {
    pub entity_id: String,
    pub acs: String,
    pub slo: String,
    /// Encrypt assertions for this certificate (base64 DER).
    pub encrypt_for: Option<String>,
    /// Require requests signed by that certificate's key.
    pub signed_requests: bool,
}

pub struct SimpleSamlPhp {
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.2:PORT`
    pub base: String,
    config: PathBuf,
    log: PathBuf,
}

impl SimpleSamlPhp {
    /// Writes the config under `dir` with `key` as the IdP's signing key, and starts it on
    /// `port`.
    pub async fn start(dir: &Path, port: u16, sp: &SpUrls, key: &KeyPair) -> Self {
        let base = format!("http://{HOST}:{port}");
        let config = dir.join("config");
        let data = dir.join("data");
        let certs = dir.join("certs");
        for d in [&config, &config.join("metadata"), &data, &certs] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::copy(&key.key, certs.join("idp.key")).expect("key");
        std::fs::copy(&key.cert, certs.join("idp.crt")).expect("cert");
        let template = super::root().join("tests/saml-idp/config");
        for file in [
            "config.php",
            "authsources.php",
            "metadata/saml20-idp-hosted.php",
            "metadata/saml20-sp-remote.php",
        ] {
            let text = std::fs::read_to_string(template.join(file)).expect("template");
            let text = text
                .replace("{{IDP_BASE}}", &base)
                .replace("{{SP_ENTITY_ID}}", &sp.entity_id)
                .replace("{{ACS_URL}}", &sp.acs)
                .replace("{{SLO_URL}}", &sp.slo)
                .replace(
                    "{{SP_CERT_DATA}}",
                    sp.encrypt_for.as_deref().unwrap_or_default(),
                )
                .replace("{{VALIDATE_REQUESTS}}", &sp.signed_requests.to_string())
                .replace("{{CERT_DIR}}", &certs.display().to_string())
                .replace("{{DATA_DIR}}", &data.display().to_string());
            std::fs::write(config.join(file), text).expect("write config");
        }
        let mut idp = Self {
            child: None,
            port,
            base,
            config,
            log: dir.join("php.log"),
        };
        idp.run().await;
        idp
    }

    async fn run(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log");
        let child = Command::new("php")
            .arg("-S")
            .arg(format!("{HOST}:{}", self.port))
            .arg("-t")
            .arg(WWW)
            .env("SIMPLESAMLPHP_CONFIG_DIR", &self.config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start php -S (apt-get install simplesamlphp php-cli php-xml)");
        self.child = Some(child);
        // Error pages are 200 HTML too: ready means the metadata document itself.
        for _ in 0..150 {
            if self.metadata().await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "SimpleSAMLphp did not serve its metadata: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The metadata document, if it is being served.
    pub async fn metadata(&self) -> Option<String> {
        let addr = format!("{HOST}:{}", self.port).parse().expect("addr");
        let connect = tokio::net::TcpStream::connect(addr).await;
        if connect.is_err() {
            return None;
        }
        let host = format!("{HOST}:{}", self.port);
        let r = send_bytes(
            addr,
            "GET",
            "/saml2/idp/metadata.php",
            &[("host", host.as_bytes())],
            None,
        )
        .await;
        let xml = r.header("content-type") == Some("application/samlmetadata+xml");
        xml.then(|| r.body.clone())
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/saml2/idp/metadata.php", self.base)
    }

    pub fn entity_id(&self) -> String {
        self.metadata_url()
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts again with `key` as the signing key (a key rollover at the IdP).
    pub async fn restart_with(&mut self, key: &KeyPair) {
        self.stop().await;
        let certs = self.config.parent().expect("dir").join("certs");
        std::fs::copy(&key.key, certs.join("idp.key")).expect("key");
        std::fs::copy(&key.cert, certs.join("idp.crt")).expect("cert");
        self.run().await;
    }
}

//! The deployment files: every Kubernetes manifest (rendered overlays and raw files) and every
//! Envoy config validate offline (`scripts/validate-deploy`), the validator catches broken
//! copies, and the config the manifests ship is one gatehouse accepts.

use crate::support;

use std::process::Output;

fn run_validate(args: &[&str]) -> Output {
    std::process::Command::new(support::root().join("scripts/validate-deploy"))
        .args(args)
        .current_dir(support::root())
        .output()
        .expect("run scripts/validate-deploy (needs python3 >= 3.11)")
}

fn report(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn manifests_and_envoy_configs_validate() {
    let out = run_validate(&[]);
    let text = report(&out);
    assert!(out.status.success(), "{text}");
    for expected in [
        "k8s/overlays/sidecar",
        "k8s/overlays/shared",
        "AuthService",
        "HorizontalPodAutoscaler",
        "envoy --mode validate",
        "0 failed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// The validator itself: each of its deliberate breakages (a wrong type, an unknown field, an
/// insecure container, an invalid Envoy config, …) must be reported.
#[test]
fn validator_catches_broken_manifests() {
    let out = run_validate(&["--self-test"]);
    assert!(out.status.success(), "{}", report(&out));
}

#[tokio::test]
async fn shipped_gatehouse_config_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::root().join("k8s/base/gatehouse.toml");
    let out = support::processes::run_cli(
        &["check-config", "--config", config.to_str().unwrap()],
        &[
            (
                "GATEHOUSE_DATABASE_URL",
                "postgres://gatehouse@db/gatehouse",
            ),
            ("GATEHOUSE_ADMIN_TOKEN", "t"),
            ("GATEHOUSE_IDP_MAIN_SECRET", "s"),
            ("GATEHOUSE_TOKEN_KEY", "k"),
        ],
        dir.path(),
    )
    .await;
    assert!(out.success, "{out:?}");
}

//! `--auth-token=jwt,...` on etcd 3.4 and ferrocd: etcdctl with `--user`
//! works the same, the token is a signed JWT, and a token that was tampered
//! with or signed with another key is refused as invalid.

use ferrocd_e2e::{on_etcd_and_ferrocd, Kind, Server};
use ferrocd_proto::etcdserverpb::auth_client::AuthClient;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{AuthenticateRequest, RangeRequest};

/// An ES256 key pair as PEM files in `dir`: (public, private).
fn es256_keys(dir: &std::path::Path, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let (public, private) = (dir.join(format!("{name}.pub")), dir.join(name));
    std::fs::write(&public, key.public_key_pem()).unwrap();
    std::fs::write(&private, key.serialize_pem()).unwrap();
    (public.display().to_string(), private.display().to_string())
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn jwt_tokens_authenticate_and_forged_ones_are_refused(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (public, private) = es256_keys(dir.path(), "jwt");
    let token_flag =
        format!("--auth-token=jwt,pub-key={public},priv-key={private},sign-method=ES256");
    let flags = [token_flag.as_str(), "--bcrypt-cost=4"];
    let server = match kind {
        Kind::Ferrocd => Server::ferrocd(&flags).await,
        Kind::Etcd => match Server::etcd(&flags).await {
            Some(s) => s,
            None => return,
        },
    };
    ok(&server.etcdctl(&["user", "add", "root:rootpw", "--interactive=false"]));
    ok(&server.etcdctl(&["auth", "enable"]));
    ok(&server.etcdctl(&["--user=root:rootpw", "put", "k", "v"]));
    assert_eq!(
        ok(&server.etcdctl(&["--user=root:rootpw", "get", "k", "--print-value-only"])),
        "v"
    );
    let wrong = server.etcdctl(&["--user=root:nope", "get", "k"]);
    assert!(!wrong.status.success(), "{kind:?}: a wrong password got in");

    let channel = server.channel().await.unwrap();
    let token = AuthClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            name: "root".into(),
            password: "rootpw".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_eq!(token.split('.').count(), 3, "{kind:?}: not a JWT: {token}");
    let read = |token: String| {
        let mut kv = KvClient::new(channel.clone());
        async move {
            let mut req = tonic::Request::new(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            });
            req.metadata_mut().insert("token", token.parse().unwrap());
            kv.range(req).await
        }
    };
    assert!(
        read(token.clone()).await.is_ok(),
        "{kind:?}: its own token refused"
    );
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = "eyJ1c2VybmFtZSI6InJvb3QiLCJyZXZpc2lvbiI6OTksImV4cCI6OTk5OTk5OTk5OX0";
    parts[1] = forged_claims;
    let forged = read(parts.join(".")).await.unwrap_err();
    assert_eq!(
        forged.message(),
        "etcdserver: invalid auth token",
        "{kind:?}"
    );
}

on_etcd_and_ferrocd!(jwt_tokens_authenticate_and_forged_ones_are_refused);

#[test]
fn bad_jwt_keys_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (public, _) = es256_keys(dir.path(), "a");
    let (_, other_private) = es256_keys(dir.path(), "b");
    for (flag, expect) in [
        (
            format!("--auth-token=jwt,pub-key={public},priv-key={other_private},sign-method=ES256"),
            "does not verify",
        ),
        (
            "--auth-token=jwt,pub-key=/nonexistent.pub,sign-method=ES256".to_string(),
            "/nonexistent.pub",
        ),
        ("--auth-token=jwt,sign-method=ES256".to_string(), "pub-key"),
    ] {
        let out = std::process::Command::new(ferrocd_e2e::ferrocd_bin())
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(&flag)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{flag}: expected {expect:?} in {stderr}"
        );
    }
}

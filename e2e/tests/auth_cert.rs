//! Auth with `--client-cert-auth`, against etcd 3.4 and ferrocd alike: a
//! request without a token is the user its client certificate's common
//! name names (kube-apiserver's usual setup); a token, when given, wins.

use std::process::Output;

use ferrocd_e2e::etcdctl_pair::{Identity, Out};
use ferrocd_e2e::pki::{ClientCerts, Pki};
use ferrocd_e2e::{require_tool, Kind, Server};

/// Starts `kind` serving `https://` with mutual TLS, talking to it as
/// `root` by certificate.
async fn mtls_server(kind: Kind, pki: &mut Pki) -> Server {
    let server = pki.issue("server", "server");
    let flags = [
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
        format!("--trusted-ca-file={}", pki.ca().display()),
        "--client-cert-auth=true".to_string(),
        "--bcrypt-cost=4".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_https(kind, pki.client("root"), &flags).await
}

fn normalize(id: &Identity, out: &Output) -> Out {
    Out::normalize(out, |s| id.mask(s).trim_end().to_string(), |l| id.mask(l))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_common_name_is_the_user_without_a_token() {
    if !require_tool("etcdctl") || !require_tool("etcd") {
        return;
    }
    let mut pki = Pki::new("e2e-ca");
    let ferrocd = mtls_server(Kind::Ferrocd, &mut pki).await;
    let etcd = mtls_server(Kind::Etcd, &mut pki).await;
    let (f_id, e_id) = (Identity::of(&ferrocd).await, Identity::of(&etcd).await);
    let (u1, stranger) = (pki.client("u1"), pki.client("stranger"));
    let root = ["--user=root:rootpw"];
    // (certificate, command, whether it succeeds)
    let script: &[(&ClientCerts, &[&str], bool)] = &[
        (&u1, &["user", "add", "root:rootpw"], true),
        (&u1, &["user", "add", "u1:pw1"], true),
        (&u1, &["role", "add", "r1"], true),
        (
            &u1,
            &[
                "role",
                "grant-permission",
                "r1",
                "readwrite",
                "/a/",
                "--prefix",
            ],
            true,
        ),
        (&u1, &["user", "grant-role", "u1", "r1"], true),
        (&u1, &["auth", "enable"], true),
        // The harness's own certificate is root's.
        (&u1, &["put", "/a/x", "1"], true),
        (&u1, &["get", "/a/x"], true),
        (&u1, &["put", "/b", "1"], false),
        (&u1, &["user", "list"], false),
        (&stranger, &["get", "/a/x"], false),
        (&stranger, &["put", "/a/y", "1"], false),
        (&u1, &[root[0], "put", "/b", "2"], true),
        (&u1, &["--user=u1:wrong", "get", "/a/x"], false),
    ];
    for (i, &(cert, args, succeeds)) in script.iter().enumerate() {
        // Setup runs as root, by certificate until auth is on, then too.
        let (f, e) = if i < 6 {
            (ferrocd.etcdctl(args), etcd.etcdctl(args))
        } else {
            (
                ferrocd.etcdctl_as(&cert.etcdctl_flags(), args, None),
                etcd.etcdctl_as(&cert.etcdctl_flags(), args, None),
            )
        };
        let (f, e) = (normalize(&f_id, &f), normalize(&e_id, &e));
        assert_eq!(
            f,
            e,
            "`etcdctl {}` as {} differs (left: ferrocd, right: etcd)",
            args.join(" "),
            cert.cert.display()
        );
        assert_eq!(
            f.code == Some(0),
            succeeds,
            "`etcdctl {}`: {}",
            args.join(" "),
            f.stderr
        );
    }
    // Root by certificate may manage users without a password.
    let f = normalize(&f_id, &ferrocd.etcdctl(&["user", "list"]));
    let e = normalize(&e_id, &etcd.etcdctl(&["user", "list"]));
    assert_eq!(f, e);
    assert_eq!(f.stdout, "root\nu1");
}

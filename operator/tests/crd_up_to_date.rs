//! The CI diff check: `crds/` must hold exactly what `crdgen` prints, so the
//! chart and `kubectl apply` never ship a schema that drifted from the Rust types.

use std::path::Path;

#[test]
fn committed_crd_matches_crdgen_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/ferrocd.io_etcdclusters.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = ferrocd_operator::crd::crd_yaml();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with \
         `cargo run -p ferrocd-operator --bin crdgen > crds/ferrocd.io_etcdclusters.yaml`",
        path.display()
    );
}

#[test]
fn committed_backup_crd_matches_crdgen_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/ferrocd.io_etcdbackups.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        committed == ferrocd_operator::crd::backup_crd_yaml(),
        "{} is stale; regenerate it with \
         `cargo run -p ferrocd-operator --bin crdgen etcdbackups > crds/ferrocd.io_etcdbackups.yaml`",
        path.display()
    );
}

//! Prints a CRD as YAML:
//! `cargo run -p ferrocd-operator --bin crdgen > crds/ferrocd.io_etcdclusters.yaml`,
//! `cargo run -p ferrocd-operator --bin crdgen etcdbackups > crds/ferrocd.io_etcdbackups.yaml`.

fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("etcdclusters") => print!("{}", ferrocd_operator::crd::crd_yaml()),
        Some("etcdbackups") => print!("{}", ferrocd_operator::crd::backup_crd_yaml()),
        Some(other) => {
            eprintln!("unknown CRD {other:?}: etcdclusters or etcdbackups");
            std::process::exit(2);
        }
    }
}

//! Prints the `EtcdCluster` CRD as YAML: `cargo run -p ferrocd-operator --bin crdgen > crds/ferrocd.io_etcdclusters.yaml`.

fn main() {
    print!("{}", ferrocd_operator::crd::crd_yaml());
}

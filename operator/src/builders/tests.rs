use super::*;
use crate::crd::EtcdCluster;
use crate::tls::enable::EnablePhase;

fn stored_cluster(spec_yaml: &str) -> EtcdCluster {
    let mut cluster = EtcdCluster::new(
        "demo",
        serde_yaml::from_str(spec_yaml).expect("fixture parses"),
    );
    cluster.metadata.namespace = Some("prod".into());
    cluster.metadata.uid = Some("0b6c9b4e-2f4e-4c1e-9d59-4f0f3b7f8a11".into());
    cluster
}

fn cluster_ref() -> ClusterRef {
    ClusterRef::new(&stored_cluster("{}")).unwrap()
}

fn container(sts: &StatefulSet) -> &Container {
    &sts.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn args(sts: &StatefulSet) -> Vec<String> {
    container(sts).args.clone().unwrap()
}

#[test]
fn unstored_cluster_has_no_identity() {
    let cluster = EtcdCluster::new("demo", EtcdClusterSpec::default());
    assert_eq!(
        ClusterRef::new(&cluster),
        Err(BuildError::MissingMetadata("namespace"))
    );
}

#[test]
fn every_object_is_owned_by_the_cluster_as_controller() {
    let c = cluster_ref();
    let spec = EtcdClusterSpec::default();
    let owners = [
        peer_service(&c).metadata.owner_references,
        client_service(&c).metadata.owner_references,
        bootstrap_config_map(&c, 3, InitialClusterState::New)
            .metadata
            .owner_references,
        stateful_set(&c, &spec, 3).metadata.owner_references,
        pod_disruption_budget(&c, 3).metadata.owner_references,
    ];
    for owner in owners {
        let owner = &owner.expect("owner references set")[0];
        assert_eq!(owner.kind, "EtcdCluster");
        assert_eq!(owner.name, "demo");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn peer_service_is_headless_and_publishes_unready_members() {
    let svc = peer_service(&cluster_ref());
    let spec = svc.spec.unwrap();
    assert_eq!(svc.metadata.name.as_deref(), Some("demo-peer"));
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [2379, 2380]);
}

#[test]
fn client_service_exposes_only_the_client_port() {
    let spec = client_service(&cluster_ref()).spec.unwrap();
    assert_eq!(spec.cluster_ip, None);
    let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [2379]);
}

#[test]
fn member_flags_use_pod_dns_names_on_the_peer_service() {
    let sts = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3);
    let args = args(&sts);
    for expected in [
        "--name=$(POD_NAME)",
        "--data-dir=/var/lib/ferrocd",
        "--listen-client-urls=http://0.0.0.0:2379",
        "--advertise-client-urls=http://$(POD_NAME).demo-peer.prod.svc:2379",
        "--listen-peer-urls=http://0.0.0.0:2380",
        "--initial-advertise-peer-urls=http://$(POD_NAME).demo-peer.prod.svc:2380",
        "--initial-cluster=$(INITIAL_CLUSTER)",
        "--initial-cluster-state=$(INITIAL_CLUSTER_STATE)",
        "--initial-cluster-token=prod-demo",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "missing {expected} in {args:?}"
        );
    }
}

#[test]
fn bootstrap_config_lists_all_members_by_dns_name() {
    let cm = bootstrap_config_map(&cluster_ref(), 3, InitialClusterState::New);
    let data = cm.data.unwrap();
    assert_eq!(
        data["initial-cluster"],
        "demo-0=http://demo-0.demo-peer.prod.svc:2380,\
         demo-1=http://demo-1.demo-peer.prod.svc:2380,\
         demo-2=http://demo-2.demo-peer.prod.svc:2380"
    );
    assert_eq!(data["initial-cluster-state"], "new");
}

#[test]
fn joining_member_reads_existing_state_from_config() {
    let cm = bootstrap_config_map(&cluster_ref(), 4, InitialClusterState::Existing);
    let data = cm.data.unwrap();
    assert_eq!(data["initial-cluster-state"], "existing");
    assert!(data["initial-cluster"].ends_with("demo-3=http://demo-3.demo-peer.prod.svc:2380"));
}

#[test]
fn pod_template_does_not_change_with_replicas() {
    let c = cluster_ref();
    let spec = EtcdClusterSpec::default();
    let three = stateful_set(&c, &spec, 3).spec.unwrap();
    let five = stateful_set(&c, &spec, 5).spec.unwrap();
    assert_eq!(three.template, five.template);
    assert_eq!(five.replicas, Some(5));
}

#[test]
fn members_start_in_parallel_behind_the_peer_service() {
    let spec = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3)
        .spec
        .unwrap();
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("demo-peer"));
}

#[test]
fn options_become_sorted_flags_after_the_managed_ones() {
    let c = ClusterRef::new(&stored_cluster(
        "options: {snapshot-count: '5000', quota-backend-bytes: '8589934592'}",
    ))
    .unwrap();
    let spec: EtcdClusterSpec = serde_yaml::from_str(
        "options: {snapshot-count: '5000', quota-backend-bytes: '8589934592'}",
    )
    .unwrap();
    let args = args(&stateful_set(&c, &spec, 3));
    assert_eq!(
        args[args.len() - 2..],
        ["--quota-backend-bytes=8589934592", "--snapshot-count=5000"]
    );
}

#[test]
fn probes_hit_readyz_and_livez_on_the_client_port() {
    let sts = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3);
    let c = container(&sts);
    let readiness = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    let liveness = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(liveness.path.as_deref(), Some("/livez"));
    assert_eq!(readiness.port, IntOrString::Int(2379));
    assert_eq!(liveness.port, IntOrString::Int(2379));
}

#[test]
fn default_storage_is_a_one_gigabyte_claim_per_member() {
    let spec = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3)
        .spec
        .unwrap();
    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let pvc = claims[0].spec.as_ref().unwrap();
    let requests = pvc.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["storage"], Quantity("1Gi".into()));
    assert_eq!(pvc.storage_class_name, None);
    assert_eq!(spec.template.spec.unwrap().volumes, None);
}

#[test]
fn storage_class_and_size_reach_the_claim_template() {
    let spec: EtcdClusterSpec =
        serde_yaml::from_str("storage: {size: 20Gi, storageClassName: fast-ssd}").unwrap();
    let sts = stateful_set(&cluster_ref(), &spec, 3).spec.unwrap();
    let pvc = sts.volume_claim_templates.unwrap()[0].spec.clone().unwrap();
    assert_eq!(pvc.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        pvc.resources.unwrap().requests.unwrap()["storage"],
        Quantity("20Gi".into())
    );
}

#[test]
fn empty_dir_storage_uses_a_pod_volume_and_no_claims() {
    let spec: EtcdClusterSpec = serde_yaml::from_str("storage: {emptyDir: {}}").unwrap();
    let sts = stateful_set(&cluster_ref(), &spec, 1).spec.unwrap();
    assert_eq!(sts.volume_claim_templates, None);
    let volumes = sts.template.spec.unwrap().volumes.unwrap();
    assert_eq!(volumes[0].name, "data");
    assert!(volumes[0].empty_dir.is_some());
}

#[test]
fn data_volume_is_mounted_at_the_data_dir() {
    let sts = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3);
    let mounts = container(&sts).volume_mounts.clone().unwrap();
    assert_eq!(mounts[0].name, "data");
    assert_eq!(mounts[0].mount_path, "/var/lib/ferrocd");
}

#[test]
fn pod_template_settings_pass_through_but_selector_labels_win() {
    let spec: EtcdClusterSpec = serde_yaml::from_str(
        r#"
podTemplate:
  labels: {team: storage, app.kubernetes.io/instance: hijack}
  annotations: {prometheus.io/scrape: "true"}
  nodeSelector: {disk: ssd}
  priorityClassName: system-cluster-critical
  tolerations: [{key: dedicated, operator: Equal, value: etcd, effect: NoSchedule}]
"#,
    )
    .unwrap();
    let template = stateful_set(&cluster_ref(), &spec, 3)
        .spec
        .unwrap()
        .template;
    let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["team"], "storage");
    assert_eq!(labels["app.kubernetes.io/instance"], "demo");
    let annotations = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let pod = template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(pod.tolerations.unwrap()[0].value.as_deref(), Some("etcd"));
}

#[test]
fn image_defaults_to_operator_version_and_honours_spec() {
    let c = cluster_ref();
    let default = stateful_set(&c, &EtcdClusterSpec::default(), 3);
    assert_eq!(
        container(&default).image.as_deref(),
        Some(crate::crd::default_image().as_str())
    );
    let pinned: EtcdClusterSpec =
        serde_yaml::from_str("image: registry.local/ferrocd:1.2").unwrap();
    let pinned = stateful_set(&c, &pinned, 3);
    assert_eq!(
        container(&pinned).image.as_deref(),
        Some("registry.local/ferrocd:1.2")
    );
}

#[test]
fn pdb_never_allows_losing_quorum() {
    for voters in 1..=9 {
        let quorum = voters / 2 + 1;
        let allowed = max_unavailable(voters);
        assert!(
            voters - allowed >= quorum,
            "{voters} voters, {allowed} down"
        );
        assert!(
            voters - (allowed + 1) < quorum,
            "{voters} voters could lose {} without losing quorum",
            allowed + 1
        );
    }
}

#[test]
fn pdb_for_three_voters_allows_one_disruption() {
    let pdb = pod_disruption_budget(&cluster_ref(), 3).spec.unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(pdb.min_available, None);
}

#[test]
fn client_endpoint_is_the_client_service_address() {
    assert_eq!(cluster_ref().client_endpoint(), "http://demo.prod.svc:2379");
}

#[test]
fn member_and_pvc_names_map_back_to_ordinals() {
    let c = cluster_ref();
    assert_eq!(c.ordinal_of_member(&c.member_name(4)), Some(4));
    assert_eq!(c.ordinal_of_pvc(&c.pvc_name(2)), Some(2));
    // Another cluster whose name starts with this one's is not ours.
    assert_eq!(c.ordinal_of_member(&format!("{}-x-1", c.name())), None);
    assert_eq!(c.ordinal_of_member(&format!("{}-01", c.name())), None);
    assert_eq!(c.ordinal_of_pvc(&c.member_name(1)), None);
}

#[test]
fn label_selector_matches_the_selector_labels() {
    let selector = cluster_ref().label_selector();
    assert!(selector.contains("app.kubernetes.io/name=ferrocd"));
    assert!(selector.contains(&format!(
        "app.kubernetes.io/instance={}",
        cluster_ref().name()
    )));
    assert!(!selector.contains("managed-by"), "PVCs do not carry it");
}

#[test]
fn member_pods_pass_the_restricted_pod_security_profile() {
    for spec in [
        "{}",
        TLS_AUTO,
        "{restore: {s3: {endpoint: 'http://s3:9000', bucket: b, key: k.db, credentialsSecret: c}, sha256: '00'}}",
        "{restore: {pvc: {claimName: backups, path: k.db}}}",
    ] {
        let sts = tls_stateful_set(spec);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        assert!(
            spec.contains("restore") == pod.init_containers.is_some(),
            "{spec}: restore init container"
        );
        let violations = restricted_violations(&pod);
        assert!(violations.is_empty(), "{spec}: {violations:?}");
    }
    // The check itself: a pod without the contexts fails it.
    let bare = PodSpec {
        containers: vec![Container {
            name: "c".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(restricted_violations(&bare).len(), 4);
}

#[test]
fn member_pods_run_as_the_image_user_with_a_writable_volume() {
    let sts = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3);
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let sc = pod.security_context.expect("pod security context");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(MEMBER_UID));
    assert_eq!(sc.fs_group, Some(MEMBER_UID));
}

const TLS_AUTO: &str = "tls: {auto: {}}";

fn tls_stateful_set(spec_yaml: &str) -> StatefulSet {
    let cluster = stored_cluster(spec_yaml);
    stateful_set(&ClusterRef::new(&cluster).unwrap(), &cluster.spec, 3)
}

#[test]
fn tls_member_listens_and_advertises_https_with_mutual_tls_on_both_ports() {
    let args = args(&tls_stateful_set(TLS_AUTO));
    let peer_host = "$(POD_NAME).demo-peer.prod.svc";
    for expected in [
        "--listen-client-urls=https://0.0.0.0:2379".to_string(),
        format!("--advertise-client-urls=https://{peer_host}:2379"),
        "--listen-peer-urls=https://0.0.0.0:2380".to_string(),
        format!("--initial-advertise-peer-urls=https://{peer_host}:2380"),
        "--cert-file=/etc/ferrocd/tls/server/tls.crt".to_string(),
        "--key-file=/etc/ferrocd/tls/server/tls.key".to_string(),
        "--trusted-ca-file=/etc/ferrocd/tls/server/ca.crt".to_string(),
        "--client-cert-auth=true".to_string(),
        "--peer-cert-file=/etc/ferrocd/tls/peer/tls.crt".to_string(),
        "--peer-key-file=/etc/ferrocd/tls/peer/tls.key".to_string(),
        "--peer-trusted-ca-file=/etc/ferrocd/tls/peer/ca.crt".to_string(),
        "--peer-client-cert-auth=true".to_string(),
    ] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    assert!(!args.iter().any(|a| a.contains("http://")), "{args:?}");
}

#[test]
fn tls_bootstrap_and_endpoints_use_https_urls() {
    let c = ClusterRef::new(&stored_cluster(TLS_AUTO)).unwrap();
    assert_eq!(
        c.initial_cluster(1),
        "demo-0=https://demo-0.demo-peer.prod.svc:2380"
    );
    assert_eq!(c.client_endpoint(), "https://demo.prod.svc:2379");
}

#[test]
fn tls_secrets_are_mounted_whole_so_rotations_reach_the_files() {
    let sts = tls_stateful_set(TLS_AUTO);
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let secrets: Vec<(String, String)> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let secret = v.secret.as_ref()?;
            Some((v.name.clone(), secret.secret_name.clone()?))
        })
        .collect();
    assert_eq!(
        secrets,
        [
            ("server-tls".to_string(), "demo-server-tls".to_string()),
            ("peer-tls".to_string(), "demo-peer-tls".to_string())
        ]
    );
    let mounts = container(&sts).volume_mounts.clone().unwrap();
    for (volume, path) in [
        ("server-tls", "/etc/ferrocd/tls/server"),
        ("peer-tls", "/etc/ferrocd/tls/peer"),
    ] {
        let mount = mounts.iter().find(|m| m.name == volume).unwrap();
        assert_eq!(mount.mount_path, path);
        assert_eq!(mount.sub_path, None, "a subPath mount never sees updates");
        assert_eq!(mount.read_only, Some(true));
    }
}

#[test]
fn tls_with_secret_refs_mounts_the_users_secrets() {
    let sts = tls_stateful_set(
        "tls: {secretRefs: {server: my-server, peer: my-peer, operatorClient: my-op}}",
    );
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let names: Vec<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect();
    assert_eq!(names, ["my-server", "my-peer"]);
}

#[test]
fn tls_readiness_runs_the_probe_tool_with_the_server_certificate() {
    let sts = tls_stateful_set(TLS_AUTO);
    let c = container(&sts);
    let command = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("an exec readiness probe");
    assert_eq!(
        command,
        [
            "/usr/local/bin/ferrocd-operator",
            "probe",
            "--url=https://127.0.0.1:2379/readyz",
            "--tls-dir=/etc/ferrocd/tls/server"
        ]
    );
    let liveness = c.liveness_probe.as_ref().unwrap();
    assert_eq!(
        liveness.tcp_socket.as_ref().map(|t| t.port.clone()),
        Some(IntOrString::Int(2379)),
        "liveness needs no certificate: a TCP connect"
    );
    assert_eq!(liveness.http_get, None);
}

#[test]
fn plain_cluster_has_no_tls_flags_or_volumes() {
    let sts = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3);
    assert!(!args(&sts).iter().any(|a| a.contains("cert")));
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.volumes, None);
}

#[test]
fn tls_asked_for_on_a_plain_cluster_changes_no_pod_until_the_dual_phase() {
    let plain = stateful_set(&cluster_ref(), &EtcdClusterSpec::default(), 3);
    let resource = stored_cluster(TLS_AUTO);
    let spec = &resource.spec;
    let cluster = ClusterRef::new(&resource).unwrap();
    let asked = stateful_set(&cluster.clone().with_phase(EnablePhase::Plain), spec, 3);
    assert_eq!(
        asked.spec.as_ref().unwrap().template,
        plain.spec.as_ref().unwrap().template,
        "the Plain phase keeps the plain template"
    );
    let dual = stateful_set(&cluster.clone().with_phase(EnablePhase::Dual), spec, 3);
    let dual_args = args(&dual);
    for wanted in [
        "--listen-peer-urls=http://0.0.0.0:2380,https://0.0.0.0:2382",
        "--listen-client-urls=http://0.0.0.0:2379,https://0.0.0.0:2381",
        "--initial-advertise-peer-urls=http://$(POD_NAME).demo-peer.prod.svc:2380",
    ] {
        assert!(
            dual_args.iter().any(|a| a == wanted),
            "{wanted}: {dual_args:?}"
        );
    }
    assert!(dual_args.iter().any(|a| a.starts_with("--peer-cert-file")));
    let peer_tls = stateful_set(&cluster.clone().with_phase(EnablePhase::PeerTls), spec, 3);
    assert_eq!(
        peer_tls.spec.as_ref().unwrap().template,
        dual.spec.as_ref().unwrap().template,
        "moving peer URLs restarts no pod"
    );
    let swap = cluster.clone().with_phase(EnablePhase::Swap);
    let home = cluster.clone().with_phase(EnablePhase::Home);
    assert_eq!(
        stateful_set(&home, spec, 3).spec.unwrap().template,
        stateful_set(&swap, spec, 3).spec.unwrap().template
    );
    assert_eq!(home.initial_cluster(1), swap.initial_cluster(1));
    assert_eq!(
        dual.metadata.annotations.as_ref().unwrap()[PHASE_ANNOTATION],
        "Dual"
    );
    let service = client_service(&cluster.with_phase(EnablePhase::Swap));
    let ports: Vec<i32> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [CLIENT_PORT, SIDE_CLIENT_PORT]);
}

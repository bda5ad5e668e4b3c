//! Growing the members' volumes when `spec.storage.size` grows.
//!
//! A StatefulSet's claim template cannot change, and Kubernetes grows a
//! PVC only when its request is raised and its StorageClass allows
//! expansion (`allowVolumeExpansion: true`; the API server refuses the
//! request otherwise). So when the size in the spec exceeds the one in
//! the live StatefulSet's template, the operator raises the request of
//! every member's PVC, then deletes the StatefulSet leaving its pods and
//! claims in place (orphan propagation) and applies it again with the new
//! template: the new StatefulSet adopts the running pods, none restarts,
//! and members added later get the new size. The storage provider then
//! grows each volume, and the kubelet its file system while it is
//! mounted; the `VolumeExpansion` condition names the PVCs whose capacity
//! has not reached the size yet.
//!
//! A smaller size, or a StorageClass that does not allow expansion,
//! changes nothing: the StatefulSet keeps its template and the condition
//! says why.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::builders::ClusterRef;
use crate::crd::{EtcdCluster, EtcdClusterStatus};
use crate::status;

/// How long the operator waits for an orphaned StatefulSet to be gone.
const DELETE_WAIT: Duration = Duration::from_secs(30);

/// Where the volumes stand against `spec.storage.size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// No expansion asked, none reported before.
    Nothing,
    /// Requests raised to `size`; these PVCs' capacity is below it still.
    Resizing {
        size: String,
        pending: Vec<(String, String)>,
    },
    /// Every PVC holds `size`.
    Expanded { size: String },
    /// The volumes keep `kept`: the spec's size cannot be had.
    Refused {
        reason: &'static str,
        kept: String,
        message: String,
    },
}

/// What to do with the template's size against the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Keep,
    Grow,
    Shrink,
    Unreadable,
}

fn decide(desired: &str, live: &str) -> Decision {
    match (bytes(desired), bytes(live)) {
        (Some(d), Some(l)) => match d.cmp(&l) {
            Ordering::Equal => Decision::Keep,
            Ordering::Greater => Decision::Grow,
            Ordering::Less => Decision::Shrink,
        },
        _ => Decision::Unreadable,
    }
}

/// A Kubernetes quantity in bytes (rounded down): an optionally decimal
/// number with a binary (`Ki`..`Ei`) or decimal (`k`..`E`, `m`) suffix or
/// a decimal exponent (`e3`); None when it is not one.
pub fn bytes(quantity: &str) -> Option<u128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    // (multiplier, divisor)
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (10u128.pow(3), 1),
        "M" => (10u128.pow(6), 1),
        "G" => (10u128.pow(9), 1),
        "T" => (10u128.pow(12), 1),
        "P" => (10u128.pow(15), 1),
        "E" => (10u128.pow(18), 1),
        e if e.starts_with(['e', 'E']) => (10u128.checked_pow(e[1..].parse().ok()?)?, 1),
        _ => return None,
    };
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = 10u128.checked_pow(fraction.len() as u32)?;
    Some(digits.checked_mul(mul)? / scale / div)
}

fn template_size(sts: &StatefulSet) -> Option<String> {
    claim_template_size(sts).map(|q| q.0.clone())
}

fn claim_template_size(sts: &StatefulSet) -> Option<&Quantity> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

fn set_template_size(sts: &mut StatefulSet, size: &str) {
    let requests = sts
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
        .and_then(|t| t.first_mut())
        .and_then(|c| c.spec.as_mut())
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut());
    if let Some(requests) = requests {
        requests.insert("storage".into(), Quantity(size.to_string()));
    }
}

fn request_of(pvc: &PersistentVolumeClaim) -> Option<&str> {
    let q = pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    q.get("storage").map(|q| q.0.as_str())
}

fn capacity_of(pvc: &PersistentVolumeClaim) -> Option<&str> {
    let q = pvc.status.as_ref()?.capacity.as_ref()?;
    q.get("storage").map(|q| q.0.as_str())
}

/// The members' bound PVCs whose capacity is below `size`, with their
/// capacity (`unknown` when none is reported). Claims not bound yet (a
/// member being added) get their volume at the size they ask.
fn below(pvcs: &[PersistentVolumeClaim], size: &str) -> Vec<(String, String)> {
    let want = bytes(size);
    pvcs.iter()
        .filter(|pvc| {
            pvc.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Bound")
        })
        .filter_map(|pvc| {
            let capacity = capacity_of(pvc);
            let short = match (capacity.and_then(bytes), want) {
                (Some(have), Some(want)) => have < want,
                _ => true,
            };
            short.then(|| (pvc.name_any(), capacity.unwrap_or("unknown").to_string()))
        })
        .collect()
}

/// What a reconcile saw of the volumes.
#[derive(Clone, Copy)]
pub struct Volumes<'a> {
    /// The StatefulSet running, if any.
    pub live: Option<&'a StatefulSet>,
    /// The members' PVCs.
    pub pvcs: &'a [PersistentVolumeClaim],
}

/// Brings the volumes toward the size in `desired` (the StatefulSet about
/// to be applied) against the one running, as the module doc says. When
/// the size cannot be had, `desired` keeps the running template's size so
/// that the StatefulSet still applies.
pub async fn prepare<C>(
    cluster: &EtcdCluster,
    cluster_ref: &ClusterRef,
    volumes: Volumes<'_>,
    desired: &mut StatefulSet,
    ctx: &Context<C>,
) -> Result<Expansion, Error> {
    let Some(size) = template_size(desired) else {
        return Ok(Expansion::Nothing);
    };
    let Some(kept) = volumes.live.and_then(template_size) else {
        return Ok(Expansion::Nothing);
    };
    let pvcs = volumes.pvcs;
    let pvcs_api =
        Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), cluster_ref.namespace());
    let refuse = |desired: &mut StatefulSet, reason, message| {
        set_template_size(desired, &kept);
        Ok(Expansion::Refused {
            reason,
            kept: kept.clone(),
            message,
        })
    };
    match decide(&size, &kept) {
        Decision::Unreadable => {
            return refuse(
                desired,
                "UnreadableSize",
                format!("cannot compare the size {size} with the volumes' {kept}"),
            )
        }
        Decision::Shrink => {
            return refuse(
                desired,
                "CannotShrink",
                format!(
                    "spec.storage.size {size} is below the volumes' {kept}: volumes cannot shrink; they keep {kept}"
                ),
            )
        }
        Decision::Keep | Decision::Grow => {}
    }
    // Raise every request below the size (also after a restart of the
    // operator midway: the template may already have it).
    let mut raised = 0;
    for pvc in pvcs {
        let low = request_of(pvc)
            .and_then(bytes)
            .is_some_and(|r| bytes(&size).is_some_and(|s| r < s));
        if !low {
            continue;
        }
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match pvcs_api
            .patch(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => raised += 1,
            // The API server refuses (403) when the StorageClass does not
            // allow expansion, or the volume cannot grow.
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                return refuse(
                    desired,
                    "NotSupported",
                    format!(
                        "{} cannot grow to {size}, the volumes keep {kept}: {}",
                        pvc.name_any(),
                        e.message
                    ),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    if raised > 0 {
        super::upgrade::publish(
            cluster,
            ctx,
            EventType::Normal,
            "ExpandingVolumes",
            "ExpandVolumes",
            format!("raised {raised} member volume claims to {size}"),
        )
        .await;
    }
    if decide(&size, &kept) == Decision::Grow {
        replace_keeping_pods(cluster_ref, ctx).await?;
    }
    // What the PVCs hold now (their requests were just raised; capacity
    // follows as the provider grows them).
    let pending = below(pvcs, &size);
    Ok(if pending.is_empty() {
        Expansion::Expanded { size }
    } else {
        Expansion::Resizing { size, pending }
    })
}

/// Deletes the StatefulSet leaving its pods and claims running, and waits
/// until it is gone so that it can be applied anew.
async fn replace_keeping_pods<C>(cluster_ref: &ClusterRef, ctx: &Context<C>) -> Result<(), Error> {
    let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), cluster_ref.namespace());
    match api
        .delete(cluster_ref.name(), &DeleteParams::orphan())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + DELETE_WAIT;
    while api.get_opt(cluster_ref.name()).await?.is_some() {
        if Instant::now() > deadline {
            // The next reconcile looks again.
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Writes the `VolumeExpansion` condition: True while volumes grow, False
/// once they have (only after an expansion was reported) or when the
/// size cannot be had.
pub fn report(cluster: &EtcdCluster, status: &mut EtcdClusterStatus, outcome: &Expansion) {
    let previous = cluster
        .status
        .as_ref()
        .map_or(&[][..], |s| &s.conditions[..]);
    let reported_before = previous.iter().any(|c| c.type_ == status::VOLUME_EXPANSION);
    let (state, reason, message) = match outcome {
        Expansion::Nothing => return,
        Expansion::Expanded { .. } if !reported_before => return,
        Expansion::Expanded { size } => (
            false,
            "Expanded",
            format!("every member volume holds {size}"),
        ),
        Expansion::Resizing { size, pending } => (
            true,
            "Resizing",
            format!(
                "volume claims raised to {size}; waiting for the storage provider: {}",
                pending
                    .iter()
                    .map(|(name, capacity)| format!("{name} has {capacity}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Expansion::Refused {
            reason, message, ..
        } => (false, *reason, message.clone()),
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    status.conditions.push(status::condition_of(
        status::VOLUME_EXPANSION,
        state,
        reason,
        message,
        cluster.metadata.generation,
        previous,
        &now,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1536Mi"), Some(1536 << 20));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("2G"), Some(2_000_000_000));
        assert_eq!(bytes("500k"), Some(500_000));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("1073741824"), Some(1 << 30));
        assert_eq!(bytes("1500m"), Some(1));
        for bad in ["", "Gi", "1Gb", "1.2.3Gi", "-1Gi", "1e"] {
            assert_eq!(bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_compare_by_bytes_not_text() {
        assert_eq!(decide("2Gi", "1Gi"), Decision::Grow);
        assert_eq!(decide("1024Mi", "1Gi"), Decision::Keep);
        assert_eq!(decide("1G", "1Gi"), Decision::Shrink);
        assert_eq!(decide("10Gi", "9Gi"), Decision::Grow);
        assert_eq!(decide("lots", "1Gi"), Decision::Unreadable);
    }

    fn pvc(name: &str, bound: bool, capacity: Option<&str>) -> PersistentVolumeClaim {
        let mut pvc = PersistentVolumeClaim::default();
        pvc.metadata.name = Some(name.into());
        pvc.status = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
            phase: Some(if bound { "Bound" } else { "Pending" }.into()),
            capacity: capacity.map(|c| [("storage".to_string(), Quantity(c.into()))].into()),
            ..Default::default()
        });
        pvc
    }

    #[test]
    fn claims_below_the_size_are_named_with_their_capacity() {
        let pvcs = [
            pvc("data-c-0", true, Some("2Gi")),
            pvc("data-c-1", true, Some("1Gi")),
            pvc("data-c-2", true, None),
            // A member being added: its claim is not bound yet.
            pvc("data-c-3", false, None),
        ];
        assert_eq!(
            below(&pvcs, "2Gi"),
            [
                ("data-c-1".to_string(), "1Gi".to_string()),
                ("data-c-2".to_string(), "unknown".to_string())
            ]
        );
        assert!(below(&pvcs[..1], "2048Mi").is_empty());
    }

    #[test]
    fn a_refused_size_leaves_the_template_as_it_runs() {
        let spec: crate::crd::EtcdClusterSpec =
            serde_yaml::from_str("replicas: 3\nstorage: {size: 1Gi}").unwrap();
        let cluster = EtcdCluster::new("c", spec.clone());
        let mut cluster = cluster;
        cluster.metadata.namespace = Some("ns".into());
        cluster.metadata.uid = Some("u".into());
        let cluster_ref = ClusterRef::new(&cluster).unwrap();
        let mut sts = crate::builders::stateful_set(&cluster_ref, &spec, 3);
        assert_eq!(template_size(&sts).as_deref(), Some("1Gi"));
        set_template_size(&mut sts, "2Gi");
        assert_eq!(template_size(&sts).as_deref(), Some("2Gi"));
    }

    #[test]
    fn the_condition_is_true_while_resizing_and_false_once_done_or_refused() {
        let spec: crate::crd::EtcdClusterSpec = serde_yaml::from_str("replicas: 3").unwrap();
        let mut cluster = EtcdCluster::new("c", spec);
        let find = |s: &EtcdClusterStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == status::VOLUME_EXPANSION)
                .cloned()
        };
        // Nothing asked, nothing said; done without having been asked:
        // nothing either.
        let mut s = EtcdClusterStatus::default();
        report(&cluster, &mut s, &Expansion::Nothing);
        report(
            &cluster,
            &mut s,
            &Expansion::Expanded { size: "1Gi".into() },
        );
        assert!(find(&s).is_none());
        let resizing = Expansion::Resizing {
            size: "2Gi".into(),
            pending: vec![("data-c-1".into(), "1Gi".into())],
        };
        report(&cluster, &mut s, &resizing);
        let c = find(&s).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Resizing"));
        assert!(c.message.contains("data-c-1 has 1Gi"), "{}", c.message);
        cluster.status = Some(s);
        let mut s = EtcdClusterStatus::default();
        report(
            &cluster,
            &mut s,
            &Expansion::Expanded { size: "2Gi".into() },
        );
        let c = find(&s).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Expanded")
        );
        let mut s = EtcdClusterStatus::default();
        let refused = Expansion::Refused {
            reason: "CannotShrink",
            kept: "2Gi".into(),
            message: "volumes cannot shrink".into(),
        };
        report(&cluster, &mut s, &refused);
        let c = find(&s).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "CannotShrink")
        );
    }
}

//! The errors an etcd server returns over gRPC, with their exact status codes
//! and messages.
//!
//! etcd clients (the Go `clientv3` package, `etcdctl`, and most third-party
//! clients) recognise server errors by comparing the gRPC status message
//! byte for byte, so every text here must match etcd exactly. The table
//! mirrors the `ErrGRPC*` values of etcd v3.6 (`api/v3rpc/rpctypes/error.go`;
//! checked against v3.6.0 through v3.6.14 and v3.7.1, which all agree),
//! except where a comment says otherwise.
//!
//! The whole table lives in [`EtcdError::entry`]; everything else is derived
//! from it.

use tonic::{Code, Status};

/// An error etcd sends to clients, with etcd's exact gRPC code and text.
///
/// Variant names follow etcd's `ErrGRPC*` names without the prefix, with
/// acronyms written as ordinary words (`ErrGRPCLeaseTTLTooLarge` becomes
/// [`EtcdError::LeaseTtlTooLarge`]). The one exception is
/// `ErrGRPCRequestTooManyRequests`, which is [`EtcdError::TooManyRequests`],
/// the name etcd's client side uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdError {
    // Key-value and transaction requests.
    /// A request that needs a key carried an empty one.
    EmptyKey,
    /// The key named by the request does not exist.
    KeyNotFound,
    /// A value was given where etcd ignores values (`ignore_value`).
    ValueProvided,
    /// A lease was given where etcd ignores leases (`ignore_lease`).
    LeaseProvided,
    /// A transaction has more operations than the server allows.
    TooManyOps,
    /// A transaction writes the same key more than once.
    DuplicateKey,
    /// The client announced an API version the server does not accept.
    InvalidClientApiVersion,
    /// A range request asked for an unknown sort order or target.
    InvalidSortOption,
    /// The requested revision is older than the compacted revision.
    Compacted,
    /// The requested revision is newer than the current revision.
    FutureRev,
    /// The backend database has reached its space quota.
    NoSpace,

    // Leases.
    /// No lease has the given ID.
    LeaseNotFound,
    /// A lease with the given ID already exists.
    LeaseExist,
    /// The requested lease TTL exceeds the maximum.
    LeaseTtlTooLarge,

    // Watches.
    /// The watch was cancelled by the server.
    WatchCanceled,

    // Cluster membership.
    /// A member with the given ID already exists.
    MemberExist,
    /// One of the peer URLs is already used by another member.
    PeerUrlExist,
    /// The reconfiguration would leave too few started members.
    MemberNotEnoughStarted,
    /// The member URLs given are not valid.
    MemberBadUrls,
    /// No member has the given ID.
    MemberNotFound,
    /// Only learners can be promoted, and this member is not one.
    MemberNotLearner,
    /// The learner has not caught up with the leader yet.
    LearnerNotReady,
    /// The cluster already has the maximum number of learners.
    TooManyLearners,
    /// The request came from a member of a different cluster.
    ClusterIdMismatch,

    // Request limits.
    /// The request exceeds the maximum request size.
    RequestTooLarge,
    /// The server is overloaded with pending requests
    /// (etcd's `ErrGRPCRequestTooManyRequests`).
    TooManyRequests,

    // Authentication and authorisation.
    /// Auth cannot be enabled because the `root` user does not exist.
    RootUserNotExist,
    /// Auth cannot be enabled because `root` lacks the `root` role.
    RootRoleNotExist,
    /// A user with that name already exists.
    UserAlreadyExist,
    /// The user name is empty.
    UserEmpty,
    /// No user has that name.
    UserNotFound,
    /// A role with that name already exists.
    RoleAlreadyExist,
    /// No role has that name.
    RoleNotFound,
    /// The role name is empty.
    RoleEmpty,
    /// The user name or password is wrong.
    AuthFailed,
    /// A role-grant request did not carry a permission.
    PermissionNotGiven,
    /// The user lacks permission for the request.
    PermissionDenied,
    /// The user does not have the role being revoked.
    RoleNotGranted,
    /// The role does not have the permission being revoked.
    PermissionNotGranted,
    /// The request needs auth, but auth is disabled.
    AuthNotEnabled,
    /// The auth token is missing, malformed or expired.
    InvalidAuthToken,
    /// An auth management request is not allowed in this form.
    InvalidAuthMgmt,
    /// The token was issued for an older auth store revision.
    AuthOldRevision,

    // Raft, server state and timeouts.
    /// The cluster currently has no leader.
    NoLeader,
    /// The request must be served by the leader, and this member is not it.
    NotLeader,
    /// The leader changed while the request was being served.
    LeaderChanged,
    /// The cluster version is too low for the request.
    NotCapable,
    /// The server is shutting down.
    Stopped,
    /// The request timed out.
    Timeout,
    /// The request timed out, probably because the previous leader failed.
    TimeoutDueToLeaderFail,
    /// The request timed out, probably because a connection was lost.
    TimeoutDueToConnectionLost,
    /// The request timed out waiting for the applied index to catch up.
    TimeoutWaitAppliedIndex,
    /// The cluster is not healthy.
    Unhealthy,
    /// The cluster's data is corrupt.
    Corrupt,
    /// The RPC cannot be served by a learner member.
    NotSupportedForLearner,
    /// The member chosen for leadership transfer cannot take it.
    BadLeaderTransferee,

    // Downgrades.
    /// The cluster version could not be determined during a downgrade.
    ClusterVersionUnavailable,
    /// The downgrade target version is not a valid version string.
    WrongDowngradeVersionFormat,
    /// The downgrade target version is not allowed.
    InvalidDowngradeTargetVersion,
    /// A downgrade is already in progress.
    DowngradeInProcess,
    /// There is no downgrade in progress to cancel.
    NoInflightDowngrade,

    // Context errors.
    /// The request was cancelled.
    Canceled,
    /// The request's deadline passed. Keep this variant last: the tests use
    /// it to check that [`EtcdError::ALL`] is complete.
    DeadlineExceeded,
}

impl EtcdError {
    /// Every variant, for tests and documentation, in declaration order.
    pub const ALL: &'static [EtcdError] = &[
        EtcdError::EmptyKey,
        EtcdError::KeyNotFound,
        EtcdError::ValueProvided,
        EtcdError::LeaseProvided,
        EtcdError::TooManyOps,
        EtcdError::DuplicateKey,
        EtcdError::InvalidClientApiVersion,
        EtcdError::InvalidSortOption,
        EtcdError::Compacted,
        EtcdError::FutureRev,
        EtcdError::NoSpace,
        EtcdError::LeaseNotFound,
        EtcdError::LeaseExist,
        EtcdError::LeaseTtlTooLarge,
        EtcdError::WatchCanceled,
        EtcdError::MemberExist,
        EtcdError::PeerUrlExist,
        EtcdError::MemberNotEnoughStarted,
        EtcdError::MemberBadUrls,
        EtcdError::MemberNotFound,
        EtcdError::MemberNotLearner,
        EtcdError::LearnerNotReady,
        EtcdError::TooManyLearners,
        EtcdError::ClusterIdMismatch,
        EtcdError::RequestTooLarge,
        EtcdError::TooManyRequests,
        EtcdError::RootUserNotExist,
        EtcdError::RootRoleNotExist,
        EtcdError::UserAlreadyExist,
        EtcdError::UserEmpty,
        EtcdError::UserNotFound,
        EtcdError::RoleAlreadyExist,
        EtcdError::RoleNotFound,
        EtcdError::RoleEmpty,
        EtcdError::AuthFailed,
        EtcdError::PermissionNotGiven,
        EtcdError::PermissionDenied,
        EtcdError::RoleNotGranted,
        EtcdError::PermissionNotGranted,
        EtcdError::AuthNotEnabled,
        EtcdError::InvalidAuthToken,
        EtcdError::InvalidAuthMgmt,
        EtcdError::AuthOldRevision,
        EtcdError::NoLeader,
        EtcdError::NotLeader,
        EtcdError::LeaderChanged,
        EtcdError::NotCapable,
        EtcdError::Stopped,
        EtcdError::Timeout,
        EtcdError::TimeoutDueToLeaderFail,
        EtcdError::TimeoutDueToConnectionLost,
        EtcdError::TimeoutWaitAppliedIndex,
        EtcdError::Unhealthy,
        EtcdError::Corrupt,
        EtcdError::NotSupportedForLearner,
        EtcdError::BadLeaderTransferee,
        EtcdError::ClusterVersionUnavailable,
        EtcdError::WrongDowngradeVersionFormat,
        EtcdError::InvalidDowngradeTargetVersion,
        EtcdError::DowngradeInProcess,
        EtcdError::NoInflightDowngrade,
        EtcdError::Canceled,
        EtcdError::DeadlineExceeded,
    ];

    /// The gRPC code and message etcd uses for this error: the single table
    /// every other method reads from.
    const fn entry(self) -> (Code, &'static str) {
        use Code::*;
        use EtcdError as E;
        match self {
            E::EmptyKey => (InvalidArgument, "etcdserver: key is not provided"),
            E::KeyNotFound => (InvalidArgument, "etcdserver: key not found"),
            E::ValueProvided => (InvalidArgument, "etcdserver: value is provided"),
            E::LeaseProvided => (InvalidArgument, "etcdserver: lease is provided"),
            E::TooManyOps => (
                InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            E::DuplicateKey => (
                InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            E::InvalidClientApiVersion => {
                (InvalidArgument, "etcdserver: invalid client api version")
            }
            E::InvalidSortOption => (InvalidArgument, "etcdserver: invalid sort option"),
            E::Compacted => (
                OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            E::FutureRev => (
                OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            E::NoSpace => (
                ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),

            E::LeaseNotFound => (NotFound, "etcdserver: requested lease not found"),
            E::LeaseExist => (FailedPrecondition, "etcdserver: lease already exists"),
            E::LeaseTtlTooLarge => (OutOfRange, "etcdserver: too large lease TTL"),

            E::WatchCanceled => (Cancelled, "etcdserver: watch canceled"),

            E::MemberExist => (FailedPrecondition, "etcdserver: member ID already exist"),
            E::PeerUrlExist => (FailedPrecondition, "etcdserver: Peer URLs already exists"),
            E::MemberNotEnoughStarted => (
                FailedPrecondition,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            E::MemberBadUrls => (InvalidArgument, "etcdserver: given member URLs are invalid"),
            E::MemberNotFound => (NotFound, "etcdserver: member not found"),
            E::MemberNotLearner => (
                FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            E::LearnerNotReady => (
                FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            E::TooManyLearners => (
                FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
            E::ClusterIdMismatch => (FailedPrecondition, "etcdserver: cluster ID mismatch"),

            E::RequestTooLarge => (InvalidArgument, "etcdserver: request is too large"),
            E::TooManyRequests => (ResourceExhausted, "etcdserver: too many requests"),

            E::RootUserNotExist => (FailedPrecondition, "etcdserver: root user does not exist"),
            E::RootRoleNotExist => (
                FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            E::UserAlreadyExist => (FailedPrecondition, "etcdserver: user name already exists"),
            E::UserEmpty => (InvalidArgument, "etcdserver: user name is empty"),
            E::UserNotFound => (FailedPrecondition, "etcdserver: user name not found"),
            E::RoleAlreadyExist => (FailedPrecondition, "etcdserver: role name already exists"),
            E::RoleNotFound => (FailedPrecondition, "etcdserver: role name not found"),
            E::RoleEmpty => (InvalidArgument, "etcdserver: role name is empty"),
            E::AuthFailed => (
                InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            E::PermissionNotGiven => (InvalidArgument, "etcdserver: permission not given"),
            E::PermissionDenied => (PermissionDenied, "etcdserver: permission denied"),
            E::RoleNotGranted => (
                FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            E::PermissionNotGranted => (
                FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            E::AuthNotEnabled => (
                FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            E::InvalidAuthToken => (Unauthenticated, "etcdserver: invalid auth token"),
            E::InvalidAuthMgmt => (InvalidArgument, "etcdserver: invalid auth management"),
            E::AuthOldRevision => (InvalidArgument, "etcdserver: revision of auth store is old"),

            E::NoLeader => (Unavailable, "etcdserver: no leader"),
            E::NotLeader => (FailedPrecondition, "etcdserver: not leader"),
            E::LeaderChanged => (Unavailable, "etcdserver: leader changed"),
            E::NotCapable => (FailedPrecondition, "etcdserver: not capable"),
            E::Stopped => (Unavailable, "etcdserver: server stopped"),
            E::Timeout => (Unavailable, "etcdserver: request timed out"),
            E::TimeoutDueToLeaderFail => (
                Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            E::TimeoutDueToConnectionLost => (
                Unavailable,
                "etcdserver: request timed out, possibly due to connection lost",
            ),
            E::TimeoutWaitAppliedIndex => (
                Unavailable,
                "etcdserver: request timed out, waiting for the applied index took too long",
            ),
            E::Unhealthy => (Unavailable, "etcdserver: unhealthy cluster"),
            E::Corrupt => (DataLoss, "etcdserver: corrupt cluster"),
            // etcd 3.4's code, not 3.5+'s FailedPrecondition: clients
            // (etcdctl 3.4, clientv3 3.4 and 3.5) retry Unavailable on another
            // endpoint, so one that happens to pick a learner still succeeds.
            E::NotSupportedForLearner => (Unavailable, "etcdserver: rpc not supported for learner"),
            E::BadLeaderTransferee => (FailedPrecondition, "etcdserver: bad leader transferee"),

            E::ClusterVersionUnavailable => (
                FailedPrecondition,
                "etcdserver: cluster version not found during downgrade",
            ),
            E::WrongDowngradeVersionFormat => (
                InvalidArgument,
                "etcdserver: wrong downgrade target version format",
            ),
            E::InvalidDowngradeTargetVersion => (
                InvalidArgument,
                "etcdserver: invalid downgrade target version",
            ),
            E::DowngradeInProcess => (
                FailedPrecondition,
                "etcdserver: cluster has a downgrade job in progress",
            ),
            E::NoInflightDowngrade => (FailedPrecondition, "etcdserver: no inflight downgrade job"),

            E::Canceled => (Cancelled, "etcdserver: request canceled"),
            E::DeadlineExceeded => (DeadlineExceeded, "etcdserver: context deadline exceeded"),
        }
    }

    /// The gRPC status code etcd uses for this error.
    pub fn code(self) -> Code {
        self.entry().0
    }

    /// The exact message etcd sends, e.g. `"etcdserver: key is not provided"`.
    pub fn message(self) -> &'static str {
        self.entry().1
    }

    /// The gRPC status to send to a client.
    pub fn status(self) -> Status {
        Status::new(self.code(), self.message())
    }

    /// The error whose message is `msg`, if any (clients map texts back like
    /// this). The match is exact: no trimming and no case folding.
    ///
    /// Unlike etcd's own client-side map, this recognises every message in
    /// the table, including the few etcd leaves out of that map (such as
    /// "etcdserver: watch canceled").
    pub fn from_message(msg: &str) -> Option<EtcdError> {
        Self::ALL.iter().copied().find(|e| e.message() == msg)
    }
}

impl From<EtcdError> for Status {
    fn from(err: EtcdError) -> Status {
        err.status()
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EtcdError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn exact_wire_pairs() {
        let cases = [
            (
                EtcdError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                EtcdError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                EtcdError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                EtcdError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                EtcdError::InvalidAuthToken,
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                EtcdError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                EtcdError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                EtcdError::PeerUrlExist,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                EtcdError::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
            (
                EtcdError::WatchCanceled,
                Code::Cancelled,
                "etcdserver: watch canceled",
            ),
            (
                EtcdError::DeadlineExceeded,
                Code::DeadlineExceeded,
                "etcdserver: context deadline exceeded",
            ),
        ];
        for (err, code, msg) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.message(), msg, "{err:?}");
            let status = err.status();
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), msg, "{err:?}");
            let status: Status = err.into();
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), msg, "{err:?}");
            assert_eq!(err.to_string(), msg, "{err:?}");
        }
    }

    #[test]
    fn all_lists_every_variant_once_in_order() {
        let count = EtcdError::DeadlineExceeded as usize + 1;
        assert_eq!(EtcdError::ALL.len(), count);
        for (i, err) in EtcdError::ALL.iter().enumerate() {
            assert_eq!(*err as usize, i, "{err:?} is out of place in ALL");
        }
    }

    #[test]
    fn every_message_has_etcdserver_prefix() {
        for err in EtcdError::ALL {
            assert!(
                err.message().starts_with("etcdserver: "),
                "{err:?}: {:?}",
                err.message()
            );
        }
    }

    #[test]
    fn messages_are_unique() {
        let mut seen = HashSet::new();
        for err in EtcdError::ALL {
            assert!(seen.insert(err.message()), "duplicate message for {err:?}");
        }
    }

    #[test]
    fn from_message_round_trips() {
        for err in EtcdError::ALL {
            assert_eq!(EtcdError::from_message(err.message()), Some(*err));
            assert_eq!(EtcdError::from_message(err.status().message()), Some(*err));
        }
    }

    #[test]
    fn from_message_rejects_unknown_and_near_misses() {
        assert_eq!(EtcdError::from_message(""), None);
        assert_eq!(EtcdError::from_message("etcdserver: "), None);
        assert_eq!(EtcdError::from_message("no leader"), None);
        assert_eq!(EtcdError::from_message("etcdserver: no leader "), None);
        assert_eq!(EtcdError::from_message("etcdserver: No leader"), None);
    }
}

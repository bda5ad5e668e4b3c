//! ferrocd-bench: a load generator for etcd v3 endpoints (ferrocd's and
//! etcd's alike) and a side-by-side comparison of the two.
//!
//! `main.rs` wires the flags ([`cli`]) to a [`workload`] driven by the
//! [`runner`] over a [`conn::Pool`], and prints a [`report::Summary`];
//! [`compare`] starts both servers and prints ferrocd/etcd ratios.

pub mod cli;
pub mod compare;
pub mod conn;
pub mod keys;
pub mod limiter;
pub mod report;
pub mod runner;
pub mod workload;

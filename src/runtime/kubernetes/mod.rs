//! The Kubernetes runtime: each server is a Job (with a Service, and a Secret for `secret_env`),
//! labelled so that the cluster, not this process, is the source of truth.

pub mod rbac;

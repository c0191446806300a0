//! Which capability token each server's URLs carry. The token lives in the server's Secret
//! (under [`SERVER_TOKEN_ENV`], which `envFrom` turns into the bridge's variable), never on the
//! Job. This process learns it when it creates the server, and reads it back from the Secret
//! for servers a predecessor made; it is kept here so that building a URL needs no API call.

use std::{collections::HashMap, sync::RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, api::ListParams};

use super::{
    manifests,
    retry::{self, ApiError},
};
use crate::{
    bridge::SERVER_TOKEN_ENV,
    http::capability::Capability,
    runtime::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY},
};

/// Tokens by server name; `None` for a server without one (made with `--server-auth none`).
#[derive(Default)]
pub(crate) struct Tokens {
    known: RwLock<HashMap<String, Option<Capability>>>,
}

/// The token a Secret holds, if it holds a usable one.
fn of_secret(secret: &Secret) -> Option<Capability> {
    let bytes = secret.data.as_ref()?.get(SERVER_TOKEN_ENV)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    match Capability::parse(text) {
        Ok(token) => Some(token),
        Err(e) => {
            tracing::warn!(secret = %secret.name_any(), error = %e, "a server's Secret holds an unusable token");
            None
        }
    }
}

impl Tokens {
    /// What is known of `job`'s token: `None` when nothing is, `Some(None)` when it has none.
    pub(crate) fn cached(&self, job: &str) -> Option<Option<Capability>> {
        self.known.read().expect("tokens poisoned").get(job).cloned()
    }

    pub(crate) fn insert(&self, job: &str, token: Option<Capability>) {
        self.known.write().expect("tokens poisoned").insert(job.to_string(), token);
    }

    pub(crate) fn forget(&self, job: &str) {
        self.known.write().expect("tokens poisoned").remove(job);
    }

    /// `job`'s token, read from its Secret unless known (a server without a Secret has none).
    pub(crate) async fn learn(&self, secrets: &Api<Secret>, job: &str) -> Result<Option<Capability>, ApiError> {
        if let Some(known) = self.cached(job) {
            return Ok(known);
        }
        let name = manifests::secret_name(job);
        // No Secret: no such server (not remembered, so names made up by callers leave no trace
        // here), or one from before servers had Secrets (it has no token either).
        let Some(secret) = retry::call("get secret", || secrets.get_opt(&name)).await? else { return Ok(None) };
        let token = of_secret(&secret);
        self.insert(job, token.clone());
        Ok(token)
    }

    /// Learn the tokens of all of `jobs` that are not known, with one list of the Secrets.
    pub(crate) async fn learn_all(&self, secrets: &Api<Secret>, jobs: &[String]) -> Result<(), ApiError> {
        let missing: Vec<&String> = jobs.iter().filter(|j| self.cached(j).is_none()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let managed = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let list = retry::call("list secrets", || secrets.list(&managed)).await?;
        let mut by_job: HashMap<String, Option<Capability>> = HashMap::new();
        for secret in &list.items {
            if let Some(job) = secret.labels().get(LABEL_INSTANCE) {
                by_job.insert(job.clone(), of_secret(secret));
            }
        }
        for job in missing {
            self.insert(job, by_job.remove(job).flatten());
        }
        Ok(())
    }
}

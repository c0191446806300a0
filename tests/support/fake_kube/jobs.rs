//! The simulated Job controller, for Jobs created through the API: one pod per Job from its
//! template (named `<job>-<5 chars>`, labelled and owned like the real controller's), the Job's
//! status (startTime, active, ready, failed, succeeded, conditions, completionTime), backoffLimit,
//! activeDeadlineSeconds, suspend and ttlSecondsAfterFinished.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    discovery,
    kubelet::emit_event,
    store::{DeleteOpts, Key, Propagation, Store, now_rfc3339, uid_of},
};

/// What the controller remembers about one Job (the real one keeps counts in the Job status via
/// pod finalizers; remembering pod uids here keeps the counts when pods are deleted).
#[derive(Debug, Default)]
pub(crate) struct JobTrack {
    start: Option<Instant>,
    finished: Option<Instant>,
    failed: HashSet<String>,
    succeeded: HashSet<String>,
    last_failure: Option<Instant>,
    suspended_reported: bool,
    /// The pods that were active at the last pass: one that is deleted before it finishes counts
    /// as failed, as with the real controller's finalizer-based tracking.
    active: HashSet<String>,
}

fn condition(type_: &str, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    json!({ "type": type_, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message })
}

fn has_condition(status: &Value, type_: &str) -> bool {
    status["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

fn set_condition(status: &mut Value, c: Value) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conds = status["conditions"].as_array_mut().expect("array");
    match conds.iter_mut().find(|x| x["type"] == c["type"]) {
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

fn controller_uid(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
        .and_then(|r| r["uid"].as_str())
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn pod_from_template(job: &Value) -> Value {
    let name = job["metadata"]["name"].as_str().unwrap_or_default();
    let uid = uid_of(job);
    let tmpl = &job["spec"]["template"];
    let mut meta = json!({
        "generateName": format!("{name}-"),
        "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true,
        }],
    });
    let mut labels = tmpl["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("job-name", name),
    ] {
        labels.insert(k.into(), json!(v));
    }
    meta["labels"] = Value::Object(labels);
    if let Some(a) = tmpl["metadata"]["annotations"].as_object() {
        meta["annotations"] = json!(a);
    }
    json!({ "metadata": meta, "spec": tmpl["spec"].clone() })
}

/// One pass over the managed Jobs; returns when it next needs to run (deadline, TTL, back-off).
pub(crate) fn pass(
    store: &mut Store,
    tracks: &mut HashMap<String, JobTrack>,
    now: Instant,
    backoff: Duration,
) -> Option<Instant> {
    let jobs_rt = discovery::by_resource("batch", "jobs").expect("jobs type");
    let pods_rt = discovery::by_resource("", "pods").expect("pods type");
    let jobs: Vec<(Key, Value)> = store
        .list(jobs_rt.id(), None)
        .into_iter()
        .filter(|(_, j)| store.managed.contains(uid_of(j)))
        .map(|(k, j)| (k.clone(), j.clone()))
        .collect();
    tracks.retain(|uid, _| store.uid_exists(uid));
    if jobs.is_empty() {
        return None;
    }
    let mut pods_by_job: HashMap<String, Vec<(Key, Value)>> = HashMap::new();
    for (k, p) in store.list(pods_rt.id(), None) {
        if let Some(owner) = controller_uid(p) {
            pods_by_job.entry(owner.to_string()).or_default().push((k.clone(), p.clone()));
        }
    }
    let mut next: Option<Instant> = None;
    let mut wake = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));

    for (key, job) in jobs {
        let uid = uid_of(&job).to_string();
        let track = tracks.entry(uid.clone()).or_default();
        let spec = &job["spec"];
        let old_status = job["status"].clone();
        let mut status = if old_status.is_object() { old_status.clone() } else { json!({}) };
        let finished = has_condition(&status, "Complete") || has_condition(&status, "Failed");
        if finished {
            let fin = *track.finished.get_or_insert(now);
            if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_u64() {
                let at = fin + Duration::from_secs(ttl);
                if now >= at {
                    let opts = DeleteOpts { propagation: Some(Propagation::Background), ..Default::default() };
                    let _ = store.delete(jobs_rt, &key.ns, &key.name, &opts);
                } else {
                    wake(at);
                }
            }
            continue;
        }
        if job["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let pods = pods_by_job.remove(&uid).unwrap_or_default();
        for (_, p) in &pods {
            let phase = p["status"]["phase"].as_str();
            if phase == Some("Succeeded") {
                track.succeeded.insert(uid_of(p).to_string());
            } else if phase == Some("Failed") && track.failed.insert(uid_of(p).to_string()) {
                track.last_failure = Some(now);
            }
        }
        let terminal = |p: &Value| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let active: Vec<&(Key, Value)> =
            pods.iter().filter(|(_, p)| !terminal(p) && p["metadata"].get("deletionTimestamp").is_none()).collect();
        let active_uids: HashSet<String> = active.iter().map(|(_, p)| uid_of(p).to_string()).collect();
        for lost in track.active.difference(&active_uids) {
            let finished = pods.iter().any(|(_, p)| uid_of(p) == lost && terminal(p));
            if !finished && track.failed.insert(lost.clone()) {
                track.last_failure = Some(now);
            }
        }
        track.active = active_uids;
        let terminating =
            pods.iter().filter(|(_, p)| !terminal(p) && p["metadata"].get("deletionTimestamp").is_some()).count();
        let completions = spec["completions"].as_u64().unwrap_or(1) as usize;
        let parallelism = spec["parallelism"].as_u64().unwrap_or(1) as usize;
        let backoff_limit = spec["backoffLimit"].as_u64().unwrap_or(6) as usize;
        let mut kill_active = false;
        let mut events: Vec<(&str, &str, String)> = Vec::new();
        let mut to_create = 0usize;

        if spec["suspend"].as_bool() == Some(true) {
            kill_active = true;
            track.start = None;
            if let Some(m) = status.as_object_mut() {
                m.remove("startTime");
            }
            if !track.suspended_reported {
                set_condition(&mut status, condition("Suspended", "JobSuspended", "Job suspended"));
                events.push(("Normal", "Suspended", "Job suspended".into()));
                track.suspended_reported = true;
            }
        } else {
            if track.suspended_reported {
                let mut c = condition("Suspended", "JobResumed", "Job resumed");
                c["status"] = json!("False");
                set_condition(&mut status, c);
                events.push(("Normal", "Resumed", "Job resumed".into()));
                track.suspended_reported = false;
            }
            let start = *track.start.get_or_insert(now);
            if status["startTime"].is_null() {
                status["startTime"] = json!(now_rfc3339());
            }
            let (failed, succeeded) = (track.failed.len(), track.succeeded.len());
            let deadline = spec["activeDeadlineSeconds"].as_u64().map(|s| start + Duration::from_secs(s));
            if succeeded >= completions {
                let msg = "Reached expected number of succeeded pods";
                set_condition(&mut status, condition("SuccessCriteriaMet", "CompletionsReached", msg));
                set_condition(&mut status, condition("Complete", "CompletionsReached", msg));
                status["completionTime"] = json!(now_rfc3339());
                track.finished = Some(now);
                events.push(("Normal", "Completed", "Job completed".into()));
            } else if failed > backoff_limit {
                let msg = "Job has reached the specified backoff limit";
                set_condition(&mut status, condition("FailureTarget", "BackoffLimitExceeded", msg));
                set_condition(&mut status, condition("Failed", "BackoffLimitExceeded", msg));
                kill_active = true;
                track.finished = Some(now);
                events.push(("Warning", "BackoffLimitExceeded", msg.into()));
            } else if deadline.is_some_and(|d| now >= d) {
                let msg = "Job was active longer than specified deadline";
                set_condition(&mut status, condition("FailureTarget", "DeadlineExceeded", msg));
                set_condition(&mut status, condition("Failed", "DeadlineExceeded", msg));
                kill_active = true;
                track.finished = Some(now);
                events.push(("Warning", "DeadlineExceeded", msg.into()));
            } else {
                if let Some(d) = deadline {
                    wake(d);
                }
                let wanted = parallelism.min(completions.saturating_sub(succeeded));
                let missing = wanted.saturating_sub(active.len());
                if missing > 0 {
                    match track.last_failure.map(|f| f + backoff) {
                        Some(at) if at > now => wake(at),
                        _ => to_create = missing,
                    }
                }
            }
        }

        let mut active_count = active.len();
        if kill_active {
            let opts = DeleteOpts { propagation: Some(Propagation::Background), ..Default::default() };
            for (k, p) in &active {
                if store.delete(pods_rt, &k.ns, &k.name, &opts).is_ok() {
                    track.active.remove(uid_of(p));
                    if !spec["suspend"].as_bool().unwrap_or(false) {
                        track.failed.insert(uid_of(p).to_string());
                    }
                    events.push(("Normal", "SuccessfulDelete", format!("Deleted pod: {}", k.name)));
                }
            }
            active_count = 0;
        }
        for _ in 0..to_create {
            match store.create(pods_rt, &key.ns, pod_from_template(&job), false) {
                Ok(p) => {
                    active_count += 1;
                    track.active.insert(uid_of(&p).to_string());
                    events.push((
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created pod: {}", p["metadata"]["name"].as_str().unwrap_or_default()),
                    ));
                }
                Err(e) => events.push(("Warning", "FailedCreate", format!("Error creating: {}", e.message))),
            }
        }
        status["active"] = json!(active_count);
        status["ready"] = json!(if kill_active { 0 } else { active.iter().filter(|(_, p)| pod_ready(p)).count() });
        status["terminating"] = json!(terminating);
        status["uncountedTerminatedPods"] = json!({});
        for (field, n) in [("failed", track.failed.len()), ("succeeded", track.succeeded.len())] {
            if n > 0 {
                status[field] = json!(n);
            }
        }
        if status != old_status {
            store.modify(&key, |j| j["status"] = status);
        }
        if let Some(job) = store.get(&key).cloned() {
            for (t, reason, msg) in events {
                emit_event(store, &job, t, reason, &msg, "job-controller");
            }
        }
    }
    next
}

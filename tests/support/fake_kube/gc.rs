//! The garbage collector and the end of graceful deletion: owners deleted in the background take
//! their dependents (by ownerReference uid) with them; `foregroundDeletion` removes the owner
//! once its dependents are gone; `orphan` strips the ownerReferences to it; objects whose owners
//! no longer exist are collected; namespaces being deleted are emptied; terminating pods are
//! removed when their grace delay is over
//! and their processes (process kubelet) are gone; a CRD being deleted has its custom resources
//! deleted, then loses its cleanup finalizer and goes (taking its kind with it). Owners are
//! matched by uid, whatever their kind: a Job owned by a custom resource goes with it.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use serde_json::{Value, json};

use super::{
    crds, discovery,
    discovery::TypeId,
    store::{DeleteOpts, Key, Propagation, Store, finalizers, owner_uids, set_finalizers, uid_of},
};

fn background() -> DeleteOpts {
    DeleteOpts { propagation: Some(Propagation::Background), ..Default::default() }
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"].get("deletionTimestamp").is_some()
}

/// Owner uid → its dependents.
fn dependents(store: &Store) -> HashMap<String, Vec<Key>> {
    let mut map: HashMap<String, Vec<Key>> = HashMap::new();
    for (k, o) in store.all() {
        for uid in owner_uids(o) {
            map.entry(uid).or_default().push(k.clone());
        }
    }
    map
}

fn delete_key(store: &mut Store, key: &Key) {
    let rt = discovery::type_of(key.ty);
    let _ = store.delete(rt, &key.ns, &key.name, &background());
}

/// One pass; returns when the next pod's grace delay ends.
pub(crate) fn pass(store: &mut Store, now: Instant) -> Option<Instant> {
    let ns_rt = discovery::by_resource("", "namespaces").expect("namespaces type");
    let mut next: Option<Instant> = None;
    // Namespaces being deleted: once their delay is over, delete what is in them, then the namespace.
    let doomed: Vec<(String, String)> = store
        .list(ns_rt.id(), None)
        .into_iter()
        .filter(|(_, n)| deleting(n))
        .map(|(k, n)| (k.name.clone(), uid_of(n).to_string()))
        .collect();
    for (ns, uid) in doomed {
        if let Some(at) = store.terminating.get(&uid).copied()
            && at > now
        {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let inside: Vec<(Key, bool)> = store
            .all()
            .filter(|(k, _)| !k.ns.is_empty() && k.ns == ns)
            .map(|(k, o)| (k.clone(), deleting(o)))
            .collect();
        if inside.is_empty() {
            store.raw_remove(&Key::new(ns_rt, "", &ns));
        }
        for (k, already) in inside {
            if !already {
                delete_key(store, &k);
            }
        }
    }

    // CRDs being deleted: their objects first (background), then the CRD.
    let crd_rt = crds::crd_type();
    let doomed: Vec<Key> = store
        .list(crd_rt.id(), None)
        .into_iter()
        .filter(|(_, c)| deleting(c) && finalizers(c).iter().any(|f| f == crds::CLEANUP_FINALIZER))
        .map(|(k, _)| k.clone())
        .collect();
    for key in doomed {
        store.modify(&key, crds::mark_terminating);
        let kinds: Vec<TypeId> = store
            .custom
            .iter()
            .filter(|t| t.custom.as_ref().is_some_and(|c| c.crd == key.name))
            .map(|t| t.id())
            .collect();
        let instances: Vec<(Key, bool)> = kinds
            .iter()
            .flat_map(|ty| store.list(*ty, None).into_iter().map(|(k, o)| (k.clone(), deleting(o))).collect::<Vec<_>>())
            .collect();
        for (k, already) in &instances {
            if !already {
                delete_key(store, k);
            }
        }
        if kinds.iter().all(|ty| store.list(*ty, None).is_empty()) {
            let Some(crd) = store.get(&key) else { continue };
            let mut fins = finalizers(crd);
            fins.retain(|f| f != crds::CLEANUP_FINALIZER);
            if fins.is_empty() {
                store.raw_remove(&key);
            } else {
                store.modify(&key, |o| set_finalizers(o, &fins));
            }
        }
    }

    // Owners with deletion finalizers.
    let deps = dependents(store);
    let owners: Vec<(Key, Value)> = store
        .all()
        .filter(|(_, o)| deleting(o) && finalizers(o).iter().any(|f| f == "orphan" || f == "foregroundDeletion"))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (key, owner) in owners {
        let uid = uid_of(&owner).to_string();
        let mut fins = finalizers(&owner);
        let live_deps: Vec<Key> =
            deps.get(&uid).into_iter().flatten().filter(|k| store.get(k).is_some()).cloned().collect();
        if fins.iter().any(|f| f == "orphan") {
            for d in &live_deps {
                store.modify(d, |o| {
                    let refs: Vec<Value> = o["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| r["uid"] != uid.as_str())
                        .cloned()
                        .collect();
                    if refs.is_empty() {
                        o["metadata"].as_object_mut().expect("metadata").remove("ownerReferences");
                    } else {
                        o["metadata"]["ownerReferences"] = json!(refs);
                    }
                });
            }
            fins.retain(|f| f != "orphan");
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            for d in &live_deps {
                if store.get(d).is_some_and(|o| !deleting(o)) {
                    delete_key(store, d);
                }
            }
            if live_deps.iter().all(|d| store.get(d).is_none()) {
                fins.retain(|f| f != "foregroundDeletion");
            }
        }
        if fins.is_empty() {
            store.raw_remove(&key);
        } else if fins != finalizers(&owner) {
            store.modify(&key, |o| set_finalizers(o, &fins));
        }
    }

    // Dependents whose owners are gone.
    let live: HashSet<String> = store.all().map(|(_, o)| uid_of(o).to_string()).collect();
    let orphans: Vec<(Key, Vec<String>, usize)> = store
        .all()
        .filter(|(_, o)| !deleting(o))
        .filter_map(|(k, o)| {
            let refs = o["metadata"]["ownerReferences"].as_array()?;
            let known: Vec<&Value> = refs
                .iter()
                .filter(|r| {
                    discovery::by_kind(
                        &store.custom,
                        r["apiVersion"].as_str().unwrap_or_default(),
                        r["kind"].as_str().unwrap_or_default(),
                    )
                    .is_some()
                })
                .collect();
            let dangling: Vec<String> = known
                .iter()
                .filter_map(|r| r["uid"].as_str())
                .filter(|u| !live.contains(*u))
                .map(String::from)
                .collect();
            (!dangling.is_empty()).then(|| (k.clone(), dangling, refs.len()))
        })
        .collect();
    for (key, dangling, total) in orphans {
        if dangling.len() == total {
            delete_key(store, &key);
        } else {
            store.modify(&key, |o| {
                let refs: Vec<Value> = o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| !r["uid"].as_str().is_some_and(|u| dangling.iter().any(|d| d == u)))
                    .cloned()
                    .collect();
                o["metadata"]["ownerReferences"] = json!(refs);
            });
        }
    }

    // Terminating pods whose grace delay is over (and with no finalizers left).
    let pods_rt = discovery::by_resource("", "pods").expect("pods type");
    let terminating: Vec<(Key, String)> = store
        .list(pods_rt.id(), None)
        .into_iter()
        .filter(|(_, p)| deleting(p) && finalizers(p).is_empty() && !store.held.contains(uid_of(p)))
        .map(|(k, p)| (k.clone(), uid_of(p).to_string()))
        .collect();
    for (key, uid) in terminating {
        match store.terminating.get(&uid).copied() {
            Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
            _ => {
                store.raw_remove(&key);
            }
        }
    }
    next
}

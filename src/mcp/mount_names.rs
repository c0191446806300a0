//! How a mounted server's names look on the meta server, and back: the one place they are made
//! and taken apart. Pure string functions, no I/O.
//!
//! - Tools and prompts: `<mount>_<original>`. A mount name has no `_` (1–32 letters, digits or
//!   `-`), so the first `_` always ends the mount name, whatever the original contains.
//! - Resources and resource templates: `mcp-ephemeral://mounts/<mount>/<original>`, the original
//!   URI (or URI template) appended verbatim, e.g. `demo://resource/static/document/a.md` of mount
//!   `ev` becomes `mcp-ephemeral://mounts/ev/demo://resource/static/document/a.md`. Nothing is
//!   percent-encoded, so a template's `{variables}` stay where they were: a client expanding
//!   `mcp-ephemeral://mounts/ev/demo://resource/dynamic/text/{resourceId}` gets a URI whose rest,
//!   after the mount's prefix, is exactly what the server's own template expands to.

/// The prefix of every mounted resource URI; the mount name and a `/` follow.
pub(crate) const MOUNT_URI_PREFIX: &str = "mcp-ephemeral://mounts/";

/// `<mount>_<original>`: a mounted tool's or prompt's name here.
pub(crate) fn exposed_name(mount: &str, original: &str) -> String {
    format!("{mount}_{original}")
}

/// The mount and original name behind an exposed tool or prompt name.
pub(crate) fn split_name(exposed: &str) -> Option<(&str, &str)> {
    exposed.split_once('_').filter(|(mount, original)| !mount.is_empty() && !original.is_empty())
}

/// A mounted resource's URI (or URI template) here.
pub(crate) fn exposed_uri(mount: &str, original: &str) -> String {
    format!("{MOUNT_URI_PREFIX}{mount}/{original}")
}

/// The mount and original URI behind an exposed resource URI; `None` for any other URI.
pub(crate) fn split_uri(exposed: &str) -> Option<(&str, &str)> {
    exposed
        .strip_prefix(MOUNT_URI_PREFIX)?
        .split_once('/')
        .filter(|(mount, original)| !mount.is_empty() && !original.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_first_underscore_so_originals_keep_theirs() {
        let exposed = exposed_name("clock", "get_current_time");
        assert_eq!(exposed, "clock_get_current_time");
        assert_eq!(split_name(&exposed), Some(("clock", "get_current_time")));
        assert_eq!(split_name("nounderscore"), None);
        assert_eq!(split_name("_x"), None);
        assert_eq!(split_name("x_"), None);
    }

    #[test]
    fn uris_round_trip_verbatim_including_templates_and_queries() {
        for original in [
            "demo://resource/static/document/architecture.md",
            "demo://resource/dynamic/text/{resourceId}",
            "file:///tmp/a b?x=1#frag",
            "{+base}/x",
        ] {
            let exposed = exposed_uri("ev", original);
            assert_eq!(split_uri(&exposed), Some(("ev", original)), "{exposed}");
        }
        // A client expands the exposed template the way the server would expand its own.
        let template = exposed_uri("ev", "demo://resource/dynamic/text/{resourceId}");
        let expanded = template.replace("{resourceId}", "3");
        assert_eq!(split_uri(&expanded), Some(("ev", "demo://resource/dynamic/text/3")));
        assert_eq!(split_uri("config://version"), None);
        assert_eq!(split_uri("mcp-ephemeral://mounts/ev"), None);
        assert_eq!(split_uri("mcp-ephemeral://mounts//x"), None);
    }
}

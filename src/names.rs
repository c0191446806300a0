//! Server names: `<base>-<8 random [a-z0-9]>`, valid RFC 1123 labels of at most 63 characters
//! that start with a letter.
//!
//! The same name is the local runtime's key and, on Kubernetes, the Job, Service and Secret
//! name, so it must satisfy the strictest of those rules: a Service name is an RFC 1035 label,
//! which cannot start with a digit. Names are random, never reused.

use rand::RngExt;

const SUFFIX_LEN: usize = 8;
const MAX_LEN: usize = 63;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh name for a server made from `base` (a preset name, an executable, an image).
///
/// `base` is reduced to `[a-z0-9-]`, prefixed with `mcp-` when it starts with a digit, trimmed
/// so the whole name fits in 63 characters, and replaced by `mcp` when nothing usable is left.
pub fn generate(base: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..SUFFIX_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    let mut stem = sanitize(base);
    if stem.starts_with(|c: char| c.is_ascii_digit()) {
        stem.insert_str(0, "mcp-");
    }
    stem.truncate(MAX_LEN - SUFFIX_LEN - 1);
    let stem = stem.trim_matches('-');
    let stem = if stem.is_empty() { "mcp" } else { stem };
    format!("{stem}-{suffix}")
}

/// Lower-case `base`, keep its last path component without a `:tag` or `@version`, and map
/// every other character to `-`.
fn sanitize(base: &str) -> String {
    let last = base.rsplit(['/', '\\']).find(|s| !s.is_empty()).unwrap_or("");
    let last = last.split(':').next().unwrap_or("");
    let last = match last.find('@') {
        Some(0) | None => last,
        Some(at) => &last[..at],
    };
    let mut out = String::with_capacity(last.len());
    for c in last.chars() {
        let c = c.to_ascii_lowercase();
        let mapped = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(mapped == '-' && out.ends_with('-')) {
            out.push(mapped);
        }
    }
    out.trim_matches('-').to_string()
}

/// Whether `name` is a valid RFC 1123 label (what Kubernetes demands of a Job or Service name).
pub fn is_rfc1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_labels_for_awkward_bases() {
        for base in [
            "time",
            "@modelcontextprotocol/server-everything",
            "ghcr.io/org/Image_Name:1.2",
            "---",
            "",
            "UPPER case and spaces",
            &"x".repeat(200),
            "ünïcödé",
            "3d-printer",
            "/opt/servers/2fa:1",
        ] {
            let name = generate(base);
            assert!(is_rfc1123_label(&name), "{base:?} gave {name:?}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{base:?} gave {name:?}");
        }
    }

    #[test]
    fn name_keeps_the_recognisable_stem() {
        assert!(generate("time").starts_with("time-"));
        assert!(generate("@modelcontextprotocol/server-everything").starts_with("server-everything-"));
        assert!(generate("ghcr.io/org/fetch:latest").starts_with("fetch-"));
        assert!(generate("mcp-server-git@1.2").starts_with("mcp-server-git-"));
        assert_eq!(generate("x").len(), 10);
        assert!(generate("3d-printer").starts_with("mcp-3d-printer-"));
    }

    #[test]
    fn names_are_not_reused() {
        let names: std::collections::HashSet<_> = (0..1000).map(|_| generate("time")).collect();
        assert_eq!(names.len(), 1000);
    }
}

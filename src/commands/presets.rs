//! `mcp-ephemeral presets`: the presets as a table for a person, or as JSON.

use std::path::Path;

use crate::presets::{PresetError, Presets};

/// Print the presets; a closed pipe (`| head`) is not an error.
pub fn presets(dir: Option<&Path>, json: bool) -> Result<(), PresetError> {
    let presets = Presets::load(dir)?;
    let list: Vec<_> = presets.iter().map(|p| p.summary()).collect();
    let mut text = String::new();
    if json {
        text = serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
    } else {
        for p in list {
            text += &format!("{:<20} {}\n{:<20} $ {}\n", p.name, p.description, "", p.command.join(" "));
            if !p.required_env.is_empty() {
                text += &format!("{:<20} needs: {}\n", "", p.required_env.join(", "));
            }
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(())
}

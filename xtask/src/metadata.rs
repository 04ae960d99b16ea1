//! The workspace's members as `cargo metadata` reports them, and the publishability
//! rules every publishable member must meet (so a new crate is checked without being
//! listed anywhere).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// One workspace member.
pub(crate) struct Member {
    pub(crate) name: String,
    manifest_dir: PathBuf,
    package: Value,
}

/// The members, split by whether they may be published.
pub(crate) struct Workspace {
    /// Cargo's target directory of the workspace.
    pub(crate) target_directory: PathBuf,
    pub(crate) publishable: Vec<Member>,
    pub(crate) unpublished: Vec<String>,
}

impl Workspace {
    /// Runs `cargo metadata --no-deps` in the workspace root.
    pub(crate) fn load() -> Result<Self, String> {
        let output = Command::new("cargo")
            .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
            .current_dir(crate::workspace_root())
            .output()
            .map_err(|err| format!("could not run `cargo metadata`: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "`cargo metadata` failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let json: Value = serde_json::from_slice(&output.stdout)
            .map_err(|err| format!("`cargo metadata` printed invalid JSON: {err}"))?;
        let packages = json["packages"]
            .as_array()
            .ok_or("`cargo metadata` output has no `packages` array")?;
        let mut publishable = Vec::new();
        let mut unpublished = Vec::new();
        for package in packages {
            let name = package["name"].as_str().unwrap_or_default().to_owned();
            // `publish`: null = anywhere, [] = `publish = false`.
            let is_publishable = match &package["publish"] {
                Value::Null => true,
                Value::Array(registries) => !registries.is_empty(),
                _ => false,
            };
            if is_publishable {
                let manifest_dir = Path::new(package["manifest_path"].as_str().unwrap_or("."))
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .to_path_buf();
                publishable.push(Member {
                    name,
                    manifest_dir,
                    package: package.clone(),
                });
            } else {
                unpublished.push(name);
            }
        }
        let target_directory = PathBuf::from(
            json["target_directory"]
                .as_str()
                .ok_or("`cargo metadata` output has no `target_directory`")?,
        );
        Ok(Self {
            target_directory,
            publishable,
            unpublished,
        })
    }

    /// Every publishable member has the metadata crates.io shows, its license files and
    /// README, and depends on unpublished members only as path-only dev-dependencies.
    pub(crate) fn check_publishable(&self) -> Result<(), String> {
        println!(
            "==> publishability metadata of {} crates (unpublished: {})",
            self.publishable.len(),
            self.unpublished.join(", ")
        );
        let mut problems = Vec::new();
        for member in &self.publishable {
            member.check(&self.unpublished, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "crates are not publishable:\n  {}",
                problems.join("\n  ")
            ))
        }
    }
}

impl Member {
    /// The package version.
    pub(crate) fn version(&self) -> &str {
        self.package["version"].as_str().unwrap_or_default()
    }

    fn check(&self, unpublished: &[String], problems: &mut Vec<String>) {
        let p = &self.package;
        let name = &self.name;
        for field in ["description", "license", "documentation", "rust_version"] {
            if p[field].as_str().is_none_or(|v| v.trim().is_empty()) {
                problems.push(format!("{name}: no `{}`", field.replace('_', "-")));
            }
        }
        for field in ["keywords", "categories"] {
            if p[field].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!("{name}: no `{field}`"));
            }
        }
        if let Some(repository) = p["repository"].as_str()
            && (repository.contains("example.") || repository.contains(".invalid"))
        {
            problems.push(format!(
                "{name}: placeholder `repository` {repository:?} (leave it out until there is a real one)"
            ));
        }
        match p["readme"].as_str() {
            None => problems.push(format!("{name}: no `readme`")),
            Some(readme) => {
                let path = self.manifest_dir.join(readme);
                if !path.is_file() {
                    problems.push(format!("{name}: readme {} is missing", path.display()));
                }
            }
        }
        for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
            if !self.manifest_dir.join(license).is_file() {
                problems.push(format!(
                    "{name}: no {license} in {} (a symlink to the root file is enough)",
                    self.manifest_dir.display()
                ));
            }
        }
        for dep in p["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if !unpublished.iter().any(|u| u == dep_name) {
                continue;
            }
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if kind != "dev" {
                problems.push(format!(
                    "{name}: {kind} dependency on the unpublished crate {dep_name}"
                ));
            } else if dep["req"].as_str() != Some("*") {
                problems.push(format!(
                    "{name}: dev-dependency on the unpublished crate {dep_name} has a version ({}); make it path-only so `cargo package` strips it",
                    dep["req"]
                ));
            }
        }
    }
}

//! The registry: plugin `type` -> in-process stage, or the exec fallback (the binary of
//! that name in CNI_PATH) under the exec policy; libcni's PATH lookup.

use super::contract::{Resolve, Stage};
use crate::exec::ExecStage;
use crate::settings::Settings;
use crate::spec::error::{CniError, INVALID_CONFIG};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Builds one in-process stage.
pub type StageFactory = fn() -> Arc<dyn Stage>;

/// Type name -> in-process stage, plus how to reach plugins that are not in-process.
pub struct Registry {
    stages: HashMap<String, Arc<dyn Stage>>,
    /// CNI_PATH: where plugins without an in-process stage are looked up.
    pub cni_path: Vec<PathBuf>,
    /// The entry point's settings; stages see them as [`Invocation::settings`](super::Invocation::settings).
    pub settings: Settings,
}

impl Registry {
    /// An empty registry over CNI_PATH `cni_path`, every other setting the default.
    pub fn new(cni_path: Vec<PathBuf>) -> Registry {
        Registry::with_settings(cni_path, Settings::default())
    }

    /// An empty registry over CNI_PATH `cni_path` with these settings.
    pub fn with_settings(cni_path: Vec<PathBuf>, settings: Settings) -> Registry {
        Registry {
            stages: HashMap::new(),
            cni_path,
            settings,
        }
    }

    /// Serve `type_name` in-process with `stage`.
    pub fn register(&mut self, type_name: &str, stage: Arc<dyn Stage>) {
        self.stages.insert(type_name.to_string(), stage);
    }

    /// The schema the stage registered for `type_name` declares, whatever the exec policy.
    pub fn schema(&self, type_name: &str) -> Option<&'static crate::validate::schema::Schema> {
        self.stages.get(type_name).and_then(|s| s.schema())
    }

    /// The types with an in-process stage, sorted.
    pub fn in_process_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.stages.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether `type_name` would run in-process under the current policy.
    pub fn is_in_process(&self, type_name: &str) -> bool {
        self.stages.contains_key(type_name) && !self.settings.exec.forces(type_name)
    }

    /// The stage for a plugin type: in-process unless forced, else the binary found in
    /// CNI_PATH (an error when there is none).
    pub fn resolve(&self, type_name: &str) -> Result<Arc<dyn Stage>, CniError> {
        crate::spec::ids::validate_plugin_type(type_name, "type")?;
        if let Some(s) = self.stages.get(type_name) {
            if !self.settings.exec.forces(type_name) {
                return Ok(s.clone());
            }
        }
        let path = find_in_path(type_name, &self.cni_path)?;
        Ok(Arc::new(ExecStage {
            path,
            timeout: self.settings.plugin_timeout,
        }))
    }
}

impl Resolve for Registry {
    fn resolve(&self, type_name: &str) -> Result<Arc<dyn Stage>, CniError> {
        Registry::resolve(self, type_name)
    }
    fn is_in_process(&self, type_name: &str) -> bool {
        Registry::is_in_process(self, type_name)
    }
    fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// libcni's FindInPath: the first `dir/type` that stats as a regular file (symlinks
/// followed).
pub fn find_in_path(type_name: &str, paths: &[PathBuf]) -> Result<PathBuf, CniError> {
    crate::spec::ids::validate_plugin_type(type_name, "type")?;
    if paths.is_empty() {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("failed to find plugin {type_name:?}: CNI_PATH is empty"),
        ));
    }
    for dir in paths {
        let full = dir.join(type_name);
        if let Ok(md) = std::fs::metadata(&full) {
            if md.is_file() {
                return Ok(full);
            }
        }
    }
    let dirs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(CniError::new(
        INVALID_CONFIG,
        format!("failed to find plugin {type_name:?} in path [{}]", dirs.join(" ")),
    ))
}

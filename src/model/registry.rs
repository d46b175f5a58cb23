//! The registry of known tunnels: versions, validity, and the events of each OVSDB change.

use std::collections::BTreeMap;

use super::cert::CertSource;
use super::rows::{InterfaceRow, OpenVSwitchRow};
use super::types::{Desired, Global, Tunnel};

/// Something the shell logs after an OVSDB change. `Display` is the exact log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {}

/// Known tunnels by name, plus the global settings in force.
#[derive(Debug, Default)]
pub struct Registry {
    tunnels: BTreeMap<String, Tunnel>,
    global: Global,
    global_error: Option<String>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Re-evaluates every row against the current OVSDB contents.
    pub fn update<'a>(
        &mut self,
        _ovs: Option<&OpenVSwitchRow>,
        _interfaces: impl IntoIterator<Item = &'a InterfaceRow>,
        _certs: &mut dyn CertSource,
    ) -> Vec<ModelEvent> {
        Vec::new()
    }

    pub fn tunnels(&self) -> impl Iterator<Item = &Tunnel> {
        self.tunnels.values()
    }

    pub fn global(&self) -> &Global {
        &self.global
    }

    pub fn global_error(&self) -> Option<&str> {
        self.global_error.as_deref()
    }

    pub fn desired(&self) -> Desired {
        Desired::default()
    }
}

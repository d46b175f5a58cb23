//! Config templates are data: defaults live in `templates/` (compiled in), and an admin can
//! override any of them at run time by placing a file of the same name in the override
//! directory (`--template-dir`, default `/etc/openvswitch/ipsec/templates`). Templates use
//! tera; autoescaping is off (these are not HTML) and an undefined variable is an error, so
//! a broken override fails loudly instead of rendering an empty field.
//!
//! Values reach templates only after the model's grammars accepted them, so a template never
//! has to quote or escape anything (the PSK arrives already encoded).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tera::{Context, Tera};
use thiserror::Error;

/// Default override directory, below `--root-prefix`.
pub const DEFAULT_TEMPLATE_DIR: &str = "/etc/openvswitch/ipsec/templates";

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("cannot read template override {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name} is invalid: {detail}")]
    Parse { name: String, detail: String },
    #[error("cannot render template {name}: {detail}")]
    Render { name: String, detail: String },
}

/// A set of templates: compiled-in defaults with per-file overrides.
#[derive(Debug)]
pub struct Templates {
    tera: Tera,
    /// Names whose text came from the override directory (for logs).
    overridden: Vec<String>,
}

impl Templates {
    /// Loads `defaults` (name, text), replacing each by `<override_dir>/<name>` when that file
    /// exists.
    pub fn load(
        override_dir: Option<&Path>,
        defaults: &[(&str, &str)],
    ) -> Result<Self, TemplateError> {
        let mut tera = Tera::default();
        tera.autoescape_on(Vec::new());
        let mut overridden = Vec::new();
        for (name, text) in defaults {
            let custom = match override_dir.map(|d| d.join(name)) {
                Some(path) if path.is_file() => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|source| TemplateError::Read { path, source })?,
                ),
                _ => None,
            };
            if custom.is_some() {
                overridden.push((*name).to_owned());
            }
            tera.add_raw_template(name, custom.as_deref().unwrap_or(text))
                .map_err(|e| TemplateError::Parse {
                    name: (*name).to_owned(),
                    detail: chain(&e),
                })?;
        }
        Ok(Self { tera, overridden })
    }

    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// Renders template `name` with `ctx` (any serializable struct).
    pub fn render(&self, name: &str, ctx: &impl Serialize) -> Result<String, TemplateError> {
        let err = |e: tera::Error| TemplateError::Render {
            name: name.to_owned(),
            detail: chain(&e),
        };
        let ctx = Context::from_serialize(ctx).map_err(err)?;
        self.tera.render(name, &ctx).map_err(err)
    }
}

/// tera's errors keep the useful part in their source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Ctx {
        name: &'static str,
    }

    const DEFAULTS: &[(&str, &str)] = &[("a.conf", "conn {{ name }}\n"), ("b.conf", "x\n")];

    #[test]
    fn defaults_render_without_escaping() {
        let t = Templates::load(None, DEFAULTS).unwrap();
        assert_eq!(
            t.render("a.conf", &Ctx { name: "t<1>&" }).unwrap(),
            "conn t<1>&\n"
        );
        assert!(t.overridden().is_empty());
    }

    #[test]
    fn override_dir_replaces_one_template() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.conf"), "custom {{ name }}\n").unwrap();
        let t = Templates::load(Some(d.path()), DEFAULTS).unwrap();
        assert_eq!(
            t.render("a.conf", &Ctx { name: "x" }).unwrap(),
            "custom x\n"
        );
        assert_eq!(t.render("b.conf", &Ctx { name: "x" }).unwrap(), "x\n");
        assert_eq!(t.overridden(), ["a.conf"]);
    }

    #[test]
    fn undefined_variable_and_bad_syntax_fail_loudly() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.conf"), "{{ nosuch }}").unwrap();
        let t = Templates::load(Some(d.path()), DEFAULTS).unwrap();
        assert!(
            t.render("a.conf", &Ctx { name: "x" })
                .unwrap_err()
                .to_string()
                .contains("nosuch")
        );
        std::fs::write(d.path().join("a.conf"), "{% if %}").unwrap();
        assert!(matches!(
            Templates::load(Some(d.path()), DEFAULTS),
            Err(TemplateError::Parse { .. })
        ));
    }
}

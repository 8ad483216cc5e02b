//! Where a model package comes from: a folder, a GCS prefix, or the MLflow Model Registry.

use std::fmt;
use std::path::PathBuf;

use super::RegistryError;

/// A `model.source` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A package folder on local disk.
    Folder(PathBuf),
    /// `gs://bucket/prefix`: the package's files under a Google Cloud Storage prefix.
    Gcs {
        /// Bucket name.
        bucket: String,
        /// Object prefix, without leading or trailing `/`.
        prefix: String,
    },
    /// `models:/<name>@<alias>` or `models:/<name>/<version>` in the MLflow Model Registry.
    Registry {
        /// Registered model name.
        name: String,
        /// Which of its versions.
        selector: Selector,
    },
}

/// Which version of a registered model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Whatever version the alias points at (it moves on promotion and rollback).
    Alias(String),
    /// One fixed version.
    Version(u64),
}

impl Source {
    /// Parses a `model.source` value; anything that is not `gs://` or `models:/` is a folder.
    pub fn parse(text: &str) -> Result<Source, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidSource {
            source_uri: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = text.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            return Ok(Source::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("models:/") {
            let rest = rest.trim_start_matches('/');
            if let Some((name, alias)) = rest.split_once('@') {
                if name.is_empty() || alias.is_empty() || alias.contains('/') {
                    return Err(bad("expected models:/<name>@<alias>"));
                }
                return Ok(Source::Registry {
                    name: name.to_string(),
                    selector: Selector::Alias(alias.to_string()),
                });
            }
            let (name, version) = rest.rsplit_once('/').ok_or_else(|| {
                bad("expected models:/<name>@<alias> or models:/<name>/<version>")
            })?;
            let version = version
                .parse::<u64>()
                .map_err(|_| bad("the version after the last `/` must be a number"))?;
            if name.is_empty() {
                return Err(bad("no model name"));
            }
            return Ok(Source::Registry {
                name: name.to_string(),
                selector: Selector::Version(version),
            });
        }
        if text.contains("://") {
            return Err(bad(
                "unsupported scheme (a folder, gs://bucket/prefix or models:/name@alias)",
            ));
        }
        if text.is_empty() {
            return Err(bad("empty"));
        }
        Ok(Source::Folder(PathBuf::from(text)))
    }

    /// Whether the package must be downloaded (and can be unreachable).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Source::Folder(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Folder(p) => write!(f, "{}", p.display()),
            Source::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            Source::Registry {
                name,
                selector: Selector::Alias(a),
            } => write!(f, "models:/{name}@{a}"),
            Source::Registry {
                name,
                selector: Selector::Version(v),
            } => write!(f, "models:/{name}/{v}"),
        }
    }
}

/// A path inside a package, from a remote listing, made safe to join onto the download folder:
/// relative, no `..`, no `.`, no empty or absolute part.
pub fn safe_relative(path: &str) -> Result<PathBuf, RegistryError> {
    let unsafe_path = || RegistryError::UnsafePath(path.to_string());
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(unsafe_path());
    }
    let mut out = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(unsafe_path());
        }
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_print_back() {
        for text in [
            "models/pix-fraud",
            "gs://bucket/some/prefix",
            "models:/pix-fraud@production",
            "models:/pix-fraud/12",
        ] {
            assert_eq!(Source::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Source::parse("models:/pix-fraud@staging").unwrap(),
            Source::Registry {
                name: "pix-fraud".into(),
                selector: Selector::Alias("staging".into())
            }
        );
        assert_eq!(
            Source::parse("gs://b/p/").unwrap(),
            Source::Gcs {
                bucket: "b".into(),
                prefix: "p".into()
            }
        );
        for bad in [
            "gs:///x",
            "models:/x@",
            "models:/x/latest",
            "s3://b/k",
            "",
            "models:/@a",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn listed_paths_must_stay_inside_the_package() {
        assert_eq!(
            safe_relative("a/MLmodel").unwrap(),
            PathBuf::from("a/MLmodel")
        );
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\..\\b",
            "",
        ] {
            assert!(
                matches!(safe_relative(bad), Err(RegistryError::UnsafePath(_))),
                "{bad} should be refused"
            );
        }
    }
}

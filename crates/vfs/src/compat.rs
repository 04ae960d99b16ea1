//! What callers of the earlier library (`devshell::vfs`) wrote, kept working: content
//! from any byte or text value ([`IntoContent`]), and the earlier library's path and
//! read helpers as cheap shims over the tree. `docs/MIGRATION.md` lists what changed.

use std::borrow::Cow;
use std::sync::Arc;

use crate::node::Content;
use crate::{NodeKind, Vfs, VfsError};

/// A value a file's content can be made from: byte literals (`b"..."`), `&[u8]`,
/// `Vec<u8>`, `&str`, `String`, and [`Content`] itself (an `Arc<[u8]>`: no copy, the
/// caller's allocation is shared).
pub trait IntoContent {
    /// The content as shared bytes.
    fn into_content(self) -> Content;
}

impl IntoContent for Content {
    fn into_content(self) -> Content {
        self
    }
}

impl IntoContent for &Content {
    fn into_content(self) -> Content {
        Arc::clone(self)
    }
}

impl IntoContent for Vec<u8> {
    fn into_content(self) -> Content {
        Content::from(self)
    }
}

impl IntoContent for &Vec<u8> {
    fn into_content(self) -> Content {
        Content::from(self.as_slice())
    }
}

impl IntoContent for Box<[u8]> {
    fn into_content(self) -> Content {
        Content::from(self)
    }
}

impl IntoContent for &[u8] {
    fn into_content(self) -> Content {
        Content::from(self)
    }
}

impl<const N: usize> IntoContent for &[u8; N] {
    fn into_content(self) -> Content {
        Content::from(self.as_slice())
    }
}

impl<const N: usize> IntoContent for [u8; N] {
    fn into_content(self) -> Content {
        Content::from(self.as_slice())
    }
}

impl IntoContent for &str {
    fn into_content(self) -> Content {
        Content::from(self.as_bytes())
    }
}

impl IntoContent for String {
    fn into_content(self) -> Content {
        Content::from(self.into_bytes())
    }
}

impl IntoContent for &String {
    fn into_content(self) -> Content {
        Content::from(self.as_bytes())
    }
}

impl IntoContent for Cow<'_, [u8]> {
    fn into_content(self) -> Content {
        match self {
            Cow::Borrowed(bytes) => Content::from(bytes),
            Cow::Owned(bytes) => Content::from(bytes),
        }
    }
}

impl IntoContent for Cow<'_, str> {
    fn into_content(self) -> Content {
        match self {
            Cow::Borrowed(text) => Content::from(text.as_bytes()),
            Cow::Owned(text) => Content::from(text.into_bytes()),
        }
    }
}

/// An owned copy of a subtree, in the earlier library's shape (what its
/// `Vfs::resolve_absolute` returned). Symlinks, which the earlier VFS did not have, are
/// their own variant; metadata is not part of it (use [`Vfs::node`] or [`Vfs::walk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory and its children, sorted by name.
    Dir {
        /// The last path segment (`""` for the root).
        name: String,
        /// The children.
        children: Vec<Node>,
    },
    /// A regular file and a copy of its bytes.
    File {
        /// The last path segment.
        name: String,
        /// The content.
        content: Vec<u8>,
    },
    /// A symbolic link and its target text.
    Symlink {
        /// The last path segment.
        name: String,
        /// The target, as stored.
        target: String,
    },
}

impl Node {
    /// The node's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Dir { name, .. } | Self::File { name, .. } | Self::Symlink { name, .. } => name,
        }
    }
}

/// The earlier library's lexical normalisation: `\` becomes `/`, a leading drive
/// (`C:`) is dropped, empty and `.` segments are dropped, `..` pops and clamps at `/`;
/// the result is absolute. It never fails (names are not validated: [`Vfs`] operations
/// do that when the path is used).
#[must_use]
pub fn normalize_path(path: &str) -> String {
    resolve_path_with_cwd("/", path)
}

/// [`normalize_path`] of `path` joined to `cwd` when it is relative.
#[must_use]
pub fn resolve_path_with_cwd(cwd: &str, path: &str) -> String {
    let path = path.replace('\\', "/");
    let bytes = path.as_bytes();
    let path = if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        let rest = &path[2..];
        if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        }
    } else {
        path
    };
    let joined = if path.starts_with('/') {
        path
    } else {
        format!("{}/{path}", cwd.replace('\\', "/"))
    };
    let mut parts: Vec<&str> = Vec::new();
    for segment in joined.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Vfs {
    /// The earlier library's `resolve_to_absolute`: `path` made absolute against the
    /// VFS cwd and normalised lexically ([`resolve_path_with_cwd`]); no lookup.
    #[must_use]
    pub fn resolve_to_absolute(&self, path: &str) -> String {
        resolve_path_with_cwd(self.cwd(), path)
    }

    /// The earlier library's `read_file`, which returned a `Vec<u8>`: a copy of the
    /// content. [`Vfs::read_file`] returns the shared bytes without copying.
    ///
    /// # Errors
    /// As [`Vfs::read_file`].
    pub fn read_file_vec(&self, path: &str) -> Result<Vec<u8>, VfsError> {
        self.read_file(path).map(|content| content.to_vec())
    }

    /// The earlier library's `resolve_absolute`: an owned copy of the subtree at `path`
    /// ([`Node`]). Costs a copy of every byte under it; [`Vfs::walk`] visits without
    /// copying.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn resolve_absolute(&self, path: &str) -> Result<Node, VfsError> {
        let norm = self.normalize(path)?;
        let name = norm.rsplit('/').next().unwrap_or_default().to_owned();
        self.copy_node(&norm, name)
    }

    fn copy_node(&self, path: &str, name: String) -> Result<Node, VfsError> {
        let node = self.node(path)?;
        Ok(match node.kind() {
            NodeKind::File => Node::File {
                name,
                content: self.read_file(path)?.to_vec(),
            },
            NodeKind::Symlink => Node::Symlink {
                name,
                target: node.link_target().unwrap_or_default().to_owned(),
            },
            NodeKind::Dir => {
                let mut children = Vec::new();
                for entry in self.list_dir(path)? {
                    let child = if path == "/" {
                        format!("/{}", entry.name)
                    } else {
                        format!("{path}/{}", entry.name)
                    };
                    children.push(self.copy_node(&child, entry.name.clone())?);
                }
                Node::Dir { name, children }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_content_shape_writes() {
        let mut vfs = Vfs::new();
        vfs.mkdir("/a").expect("mkdir");
        vfs.write_file("/a/lit", b"bytes").expect("literal");
        vfs.write_file("/a/arr", *b"arr").expect("array");
        vfs.write_file("/a/slice", &b"slice"[..]).expect("slice");
        vfs.write_file("/a/str", "text").expect("str");
        vfs.write_file("/a/string", String::from("owned"))
            .expect("String");
        vfs.write_file("/a/vec", vec![1_u8, 2]).expect("Vec");
        let shared: Content = Content::from(&b"shared"[..]);
        vfs.write_file("/a/arc", &shared).expect("&Arc");
        vfs.write_file("/a/arc2", Arc::clone(&shared)).expect("Arc");
        assert!(Arc::ptr_eq(
            &vfs.read_file("/a/arc").expect("read"),
            &shared
        ));
        assert_eq!(vfs.read_file_vec("/a/str").expect("read"), b"text");
        assert_eq!(vfs.read_file_vec("/a/lit").expect("read"), b"bytes");
    }

    #[test]
    fn seed_path_helpers() {
        assert_eq!(normalize_path("C:\\x\\.\\y\\..\\z"), "/x/z");
        assert_eq!(normalize_path("../../a//b/"), "/a/b");
        assert_eq!(resolve_path_with_cwd("/w", "src/../lib"), "/w/lib");
        let mut vfs = Vfs::new();
        vfs.mkdir("/p/src").expect("mkdir");
        vfs.set_cwd("/p").expect("cd");
        assert_eq!(vfs.resolve_to_absolute("src/./x"), "/p/src/x");
    }

    #[test]
    fn resolve_absolute_copies_the_subtree() {
        let mut vfs = Vfs::new();
        vfs.mkdir("/p/d").expect("mkdir");
        vfs.write_file("/p/d/f", "x").expect("write");
        vfs.symlink("f", "/p/d/l").expect("link");
        let node = vfs.resolve_absolute("/p").expect("resolve");
        assert_eq!(
            node,
            Node::Dir {
                name: "p".to_owned(),
                children: vec![Node::Dir {
                    name: "d".to_owned(),
                    children: vec![
                        Node::File {
                            name: "f".to_owned(),
                            content: b"x".to_vec()
                        },
                        Node::Symlink {
                            name: "l".to_owned(),
                            target: "f".to_owned()
                        },
                    ]
                }]
            }
        );
        assert_eq!(vfs.resolve_absolute("/").expect("root").name(), "");
    }
}

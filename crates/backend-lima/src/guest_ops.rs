//! The fallback guest file operations: one `limactl shell` per operation running a small
//! POSIX `sh` script (GNU coreutils `realpath -m` and `mv -T` in the guest), used when the
//! sidecar channel cannot be opened.
//!
//! Every operation is one guest command: `/bin/sh -c SCRIPT devshell-vm-op MOUNT OP PATH
//! [TO]`, file content travels on stdin/stdout, and the script reports the contract's
//! error kinds through its exit status (10–13 about `PATH`, 20–23 about `TO`: not found,
//! not a directory, is a directory, invalid path). Paths are checked lexically in Rust
//! before anything is sent; the script then resolves symlinks (`realpath -m`) and refuses
//! any path whose resolution leaves the mount, so no operation reads, writes or removes
//! outside it through a link. `stat`, `exists`, `remove` and `rename` act on a final
//! symlink itself (only its parent is resolved). `write_file` refuses an existing FIFO,
//! socket or device (as the sidecar does) and writes through a temporary file renamed
//! over the path, so it never writes into a special node, even one swapped in after the
//! check.

use devshell_vm_guest_fs::{GuestFsError, GuestKind, GuestMetadata};

/// The script. `$1` mount, `$2` operation, `$3` path, `$4` second path (rename).
pub(crate) const SCRIPT: &str = r#"
M=$1; op=$2; p=$3; q=${4-}
fail() { printf '%s\n' "$2" >&2; exit "$1"; }
MR=$(realpath -- "$M" && echo x) || fail 30 "guest mount $M is missing"
MR=${MR%??}
inside() { case "$1" in "$MR"|"$MR"/*) return 0;; esac; return 1; }
rp() { r=$(realpath -m -- "$1" && echo x) || fail 30 "realpath failed"; r=${r%??}; }
# t := $1 with its parent resolved (the final component is not followed)
lres() {
  if [ "$1" = "$M" ]; then t=$MR; return; fi
  par=${1%/*}; [ -n "$par" ] || par=/
  rp "$par"; inside "$r" || fail "$2" "escapes the mount through a symlink"
  t=${r%/}/${1##*/}
}
# walk the components of $1 below the mount; $2 = code base (10 or 20);
# (it overwrites r: callers resolve with rp after walking)
# $3 = 1 when missing components are allowed (creating paths)
walk() {
  cur=$M; rest=${1#"$M"}
  while [ -n "$rest" ]; do
    rest=${rest#/}
    case "$rest" in
      */*) comp=${rest%%/*}; rest=/${rest#*/} ;;
      *) comp=$rest; rest= ;;
    esac
    cur=$cur/$comp
    if [ -L "$cur" ]; then
      rp "$cur"; inside "$r" || fail $(($2 + 3)) "escapes the mount through a symlink"
    fi
    if [ -e "$cur" ]; then
      if [ ! -d "$cur" ]; then
        if [ -n "$rest" ] || [ "${3-0}" = 1 ]; then fail $(($2 + 1)) "not a directory"; fi
      fi
    else
      [ "${3-0}" = 1 ] && return 0
      fail "$2" "not found"
    fi
  done
}
case "$op" in
list_dir)
  rp "$p"; inside "$r" || fail 13 "escapes the mount through a symlink"
  if [ -d "$r" ]; then
    for f in "$r"/* "$r"/.*; do
      n=${f##*/}
      [ "$n" = . ] || [ "$n" = .. ] && continue
      [ -e "$f" ] || [ -L "$f" ] || continue
      printf '%s\0' "$n"
    done
    exit 0
  fi
  walk "$p" 10; fail 11 "not a directory" ;;
read_file)
  rp "$p"; inside "$r" || fail 13 "escapes the mount through a symlink"
  if [ -f "$r" ]; then exec cat -- "$r"; fi
  if [ -d "$r" ]; then fail 12 "is a directory"; fi
  walk "$p" 10; fail 30 "not a regular file" ;;
write_file)
  walk "${p%/*}" 10 1
  rp "$p"; inside "$r" || fail 13 "escapes the mount through a symlink"
  if [ -d "$r" ]; then fail 12 "is a directory"; fi
  if [ -e "$r" ] && [ ! -f "$r" ]; then
    fail 30 "not a regular file (FIFO, socket or device): refusing to write into it"
  fi
  par=${r%/*}; [ -n "$par" ] || par=/
  mkdir -p -- "$par" || fail 30 "mkdir failed"
  # Into a new file beside it, renamed over the path: a node swapped for a FIFO or a
  # device after the check above is replaced, never written into.
  tmp=$(mktemp -- "$par/.devshell-vm-write.XXXXXX") || fail 30 "cannot create a temporary file"
  if [ -f "$r" ]; then chmod --reference="$r" -- "$tmp"
  else chmod -- "$(printf '%o' $((0666 & ~$(umask))))" "$tmp"; fi || { rm -f -- "$tmp"; fail 30 "chmod failed"; }
  cat > "$tmp" || { rm -f -- "$tmp"; fail 30 "write failed"; }
  mv -f -T -- "$tmp" "$r" || { rm -f -- "$tmp"; fail 30 "rename failed"; }
  exit 0 ;;
mkdir)
  walk "$p" 10 1
  rp "$p"; inside "$r" || fail 13 "escapes the mount through a symlink"
  if [ -d "$r" ]; then exit 0; fi
  mkdir -p -- "$r" || fail 30 "mkdir failed"
  exit 0 ;;
remove)
  lres "$p" 13
  if [ -e "$t" ] || [ -L "$t" ]; then rm -rf -- "$t" || fail 30 "rm failed"; exit 0; fi
  walk "$p" 10; fail 10 "not found" ;;
stat)
  lres "$p" 13
  if [ -L "$t" ]; then printf 'symlink 0'; exit 0; fi
  if [ -d "$t" ]; then printf 'dir 0'; exit 0; fi
  if [ -e "$t" ]; then printf 'file %s' "$(wc -c < "$t")"; exit 0; fi
  walk "$p" 10; fail 10 "not found" ;;
rename)
  lres "$p" 13; F=$t
  if [ ! -e "$F" ] && [ ! -L "$F" ]; then walk "$p" 10; fail 10 "not found"; fi
  lres "$q" 23; T=$t
  [ "$F" = "$T" ] && exit 0
  case "$T" in "$F"/*) fail 23 "cannot move a directory into its own subtree";; esac
  if [ -d "$T" ] && [ ! -L "$T" ]; then fail 22 "is a directory"; fi
  if [ -d "$F" ] && [ ! -L "$F" ] && { [ -e "$T" ] || [ -L "$T" ]; }; then fail 21 "not a directory"; fi
  walk "${q%/*}" 20 1
  par=${T%/*}; [ -n "$par" ] || par=/
  mkdir -p -- "$par" || fail 30 "mkdir failed"
  mv -f -T -- "$F" "$T" || fail 30 "mv failed"
  exit 0 ;;
*) fail 30 "unknown operation $op" ;;
esac
"#;

/// Maps the script's exit status to the contract's error for `path` (and `to`).
pub(crate) fn error_for(status: i32, path: &str, to: Option<&str>, stderr: &[u8]) -> GuestFsError {
    let message = String::from_utf8_lossy(stderr).trim().to_owned();
    let second = to.unwrap_or(path).to_owned();
    match status {
        10 => GuestFsError::NotFound {
            path: path.to_owned(),
        },
        11 => GuestFsError::NotADirectory {
            path: path.to_owned(),
        },
        12 => GuestFsError::IsADirectory {
            path: path.to_owned(),
        },
        13 => GuestFsError::invalid_path(path, message),
        20 => GuestFsError::NotFound { path: second },
        21 => GuestFsError::NotADirectory { path: second },
        22 => GuestFsError::IsADirectory { path: second },
        23 => GuestFsError::invalid_path(second, message),
        _ => GuestFsError::GuestCommand {
            status,
            stderr: message,
        },
    }
}

/// Parses the `stat` output (`kind size`).
pub(crate) fn parse_stat(out: &[u8], path: &str) -> Result<GuestMetadata, GuestFsError> {
    let text = String::from_utf8_lossy(out);
    let mut parts = text.split_whitespace();
    let kind = match parts.next() {
        Some("dir") => GuestKind::Dir,
        Some("file") => GuestKind::File,
        Some("symlink") => GuestKind::Symlink,
        _ => {
            return Err(GuestFsError::Internal {
                message: format!("stat of {path:?}: unexpected guest output {text:?}"),
            });
        }
    };
    let size = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(GuestMetadata { kind, size })
}

/// Splits the NUL-separated `list_dir` output into sorted names.
pub(crate) fn parse_names(out: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = out
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names
}

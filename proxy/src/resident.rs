//! Gives back the pages start-up touched, once the proxy serves, and the
//! heap memory a burst freed ([`give_back_free_heap`]).
//!
//! A sidecar is the whole `weft` binary. Parsing the command line, setting
//! up logging, fetching a leaf and compiling the first snapshot run code the
//! data path never runs again, and the kernel maps up to 64 KiB around every
//! page touched (fault-around). Those pages then count in the sidecar's RSS
//! for its whole life, about 11 MiB of a 12.6 MiB idle RSS, though they are
//! clean pages of the page cache that the agent and every other sidecar map
//! too.
//!
//! [`release_startup_pages`] drops this process's mappings of such pages.
//! Nothing is lost: a read-only private file mapping without copied-on-write
//! pages (none resident, none swapped out) always shows the file's current
//! contents, and the kernel maps them back from the page cache on the next
//! touch, so what the data path runs comes back and the rest stays out.
//!
//! Only mappings that existed when `main` began qualify (recorded by
//! [`remember_startup_mappings`]; without that record, only the
//! executable's): the executable and the libraries the dynamic loader
//! loaded for it, which are never unloaded, so no range released can
//! belong to anything else by the time `madvise` runs, as a library
//! `dlopen`ed later and unloaded in between could.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::OnceLock;

/// The address ranges of the file mappings that existed when `main` began.
static STARTUP_MAPPINGS: OnceLock<BTreeSet<(usize, usize)>> = OnceLock::new();

/// Records the file mappings the process has now: call it first thing in
/// `main`, before any thread or library loading, for
/// [`release_startup_pages`] to release libraries' pages too.
pub fn remember_startup_mappings() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    let ranges = maps
        .lines()
        .filter_map(MappingHeader::parse)
        .filter(|mapping| mapping.path.starts_with('/'))
        .map(|mapping| (mapping.range.start, mapping.range.end))
        .collect();
    let _ = STARTUP_MAPPINGS.set(ranges);
}

/// Drops the page-table entries of the start-up file mappings that are
/// read-only, private and hold no copied-on-write page, and returns how
/// many bytes of address space that covered. Failures are logged and
/// otherwise ignored: this is an optimization.
pub(crate) fn release_startup_pages() -> usize {
    let (smaps, executable) = match (std::fs::read_to_string("/proc/self/smaps"), std::env::current_exe()) {
        (Ok(smaps), Ok(executable)) => (smaps, executable.to_string_lossy().into_owned()),
        (Err(error), _) | (_, Err(error)) => {
            tracing::debug!(%error, "cannot read /proc/self/smaps or /proc/self/exe; keeping start-up pages");
            return 0;
        }
    };
    let eligible = |mapping: &MappingHeader| match STARTUP_MAPPINGS.get() {
        Some(startup) => startup.contains(&(mapping.range.start, mapping.range.end)),
        None => mapping.path == executable,
    };
    let mut released = 0;
    for range in clean_read_only_mappings(&smaps, eligible) {
        let len = range.end - range.start;
        // SAFETY: the range is a whole file mapping that existed when main
        // began (the executable or a library loaded with it, never
        // unmapped while the process runs, so the range cannot have been
        // reused since smaps was read), private and not writable, with no
        // anonymous page resident or swapped out: every page in it is the
        // page cache's copy of the file, which is what a fault maps back.
        // MADV_DONTNEED only removes page-table entries; no byte any
        // reference can see changes.
        #[allow(unsafe_code)]
        let result = unsafe {
            rustix::mm::madvise(range.start as *mut std::ffi::c_void, len, rustix::mm::Advice::LinuxDontNeed)
        };
        match result {
            Ok(()) => released += len,
            Err(error) => tracing::debug!(%error, start = range.start, len, "madvise(MADV_DONTNEED) failed"),
        }
    }
    released
}

/// How often a long-running `weft` (agent, sidecar, gateway) gives free
/// heap memory back to the kernel.
pub const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Returns the heap memory glibc holds free to the kernel (`malloc_trim(0)`)
/// and says whether there was any. glibc keeps what a burst freed (5,000
/// blocking queries, say) in its arenas for reuse, so without this an
/// agent's RSS stays at its peak: 173 MiB after 5,000 closed blocking
/// queries, 61 MiB after one call. Other allocators: nothing to do.
pub fn give_back_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer and only releases memory
        // that no allocation holds; glibc locks each arena while it does.
        #[allow(unsafe_code)]
        let released = unsafe { malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Fields of an smaps entry that count copied-on-write pages: a mapping
/// qualifies only if each is present and zero.
const PRIVATE_COPIES: [&str; 3] = ["Anonymous:", "Swap:", "Private_Hugetlb:"];

/// The address ranges of the `eligible` mappings in `smaps` (the format of
/// `/proc/<pid>/smaps`) that are file-backed, private, readable and not
/// writable, and hold no private copy of any page.
fn clean_read_only_mappings(smaps: &str, eligible: impl Fn(&MappingHeader) -> bool) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    // The mapping being read, if it qualifies so far, and the fields of
    // PRIVATE_COPIES seen zero.
    let mut candidate: Option<(Range<usize>, usize)> = None;
    let mut finish = |candidate: &mut Option<(Range<usize>, usize)>| {
        if let Some((range, zeros)) = candidate.take() {
            if zeros == PRIVATE_COPIES.len() {
                ranges.push(range);
            }
        }
    };
    for line in smaps.lines() {
        if let Some(header) = MappingHeader::parse(line) {
            finish(&mut candidate);
            candidate = (header.is_read_only_private_file() && eligible(&header)).then_some((header.range, 0));
            continue;
        }
        let Some((_, zeros)) = candidate.as_mut() else { continue };
        if let Some(field) = PRIVATE_COPIES.iter().find(|field| line.starts_with(*field)) {
            let value = line[field.len()..].trim();
            if value.strip_suffix("kB").is_some_and(|kib| kib.trim() == "0") {
                *zeros += 1;
            } else {
                candidate = None;
            }
        }
    }
    finish(&mut candidate);
    ranges
}

/// The first line of a mapping in smaps: `start-end perms offset dev inode path`.
struct MappingHeader<'a> {
    range: Range<usize>,
    perms: &'a str,
    path: &'a str,
}

impl<'a> MappingHeader<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (address, rest) = line.split_once(' ')?;
        let (start, end) = address.split_once('-')?;
        let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
        let (perms, rest) = rest.split_once(' ')?;
        if perms.len() != 4 {
            return None;
        }
        // offset, device and inode, then the path (which may hold spaces).
        let mut fields = rest.splitn(4, ' ');
        let path = fields.nth(3).map(str::trim_start).unwrap_or("");
        Some(MappingHeader { range, perms, path })
    }

    fn is_read_only_private_file(&self) -> bool {
        let perms = self.perms.as_bytes();
        // A path, not `[heap]`, `[vdso]` or an anonymous mapping.
        self.path.starts_with('/') && perms[0] == b'r' && perms[1] == b'-' && perms[3] == b'p' && !self.range.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5635f017d000-5635f0639000 r--p 00000000 fe:00 7225549                    /usr/bin/weft
Size:               4848 kB
Anonymous:             0 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
VmFlags: rd mr mw me sd
5635f0639000-5635f15bf000 r-xp 004bb000 fe:00 7225549                    /usr/bin/weft
Size:              15896 kB
Anonymous:             0 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
5635f15bf000-5635f1636000 r--p 01440000 fe:00 7225549                    /usr/bin/weft
Anonymous:           476 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
5635f1636000-5635f1637000 r--p 014b6000 fe:00 7225549                    /usr/bin/weft
Anonymous:             0 kB
Swap:                  4 kB
Private_Hugetlb:       0 kB
5635f1637000-5635f163e000 rw-p 014b7000 fe:00 7225549                    /usr/bin/weft
Anonymous:             0 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
563608c6c000-563608cd1000 rw-p 00000000 00:00 0                          [heap]
Anonymous:           392 kB
7f1b256d3000-7f1b256f9000 r--p 00000000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
7f1b25a00000-7f1b25a01000 r--s 00000000 fe:00 7225549                    /usr/bin/weft
Anonymous:             0 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
7f1b25b00000-7f1b25b04000 r-xp 00000000 fe:00 99                         /opt/my app/weft (deleted)
Anonymous:             0 kB
Swap:                  0 kB
Private_Hugetlb:       0 kB
7f1b25c00000-7f1b25c04000 r-xp 00000000 fe:00 7225549                    /usr/bin/weft
Anonymous:             0 kB
";

    fn of(path: &'static str) -> impl Fn(&MappingHeader) -> bool {
        move |mapping| mapping.path == path
    }

    #[test]
    fn only_clean_read_only_private_file_mappings_qualify() {
        assert_eq!(
            clean_read_only_mappings(SMAPS, of("/usr/bin/weft")),
            vec![
                0x5635f017d000..0x5635f0639000, // rodata
                0x5635f0639000..0x5635f15bf000, // text
            ],
            "relocated (copied-on-write, resident or swapped), writable and shared mappings stay, and so does \
             one whose smaps entry lacks a field"
        );
        assert_eq!(
            clean_read_only_mappings(SMAPS, |mapping| mapping.range.start == 0x7f1b256d3000),
            vec![0x7f1b256d3000..0x7f1b256f9000],
            "a library, when eligible"
        );
        let anonymous = |mapping: &MappingHeader| mapping.path.is_empty() || mapping.path.starts_with('[');
        assert!(clean_read_only_mappings(SMAPS, anonymous).is_empty(), "never the heap or the vDSO");
    }

    #[test]
    fn paths_with_spaces_and_deleted_executables_are_matched_whole() {
        assert_eq!(
            clean_read_only_mappings(SMAPS, of("/opt/my app/weft (deleted)")),
            vec![0x7f1b25b00000..0x7f1b25b04000]
        );
        assert!(clean_read_only_mappings(SMAPS, of("/opt/my")).is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        if std::fs::metadata("/proc/self/smaps").is_err() {
            return eprintln!("skipping: no /proc/self/smaps (is /proc mounted?)");
        }
        let released = release_startup_pages();
        // Code and read-only data are still there to run and read.
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(released > 0, "a test binary has read-only mappings");
    }
}

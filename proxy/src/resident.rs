//! Gives back the pages start-up touched, once the proxy serves.
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
//! pages always shows the file's current contents, and the kernel maps them
//! back from the page cache on the next touch, so what the data path runs
//! comes back and the rest stays out.

use std::ops::Range;

/// Drops the page-table entries of every read-only, private, file-backed
/// mapping that holds no copied-on-write page, and returns how many bytes
/// of address space that covered. Failures are logged and otherwise
/// ignored: this is an optimization.
pub fn release_startup_pages() -> usize {
    let smaps = match std::fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => smaps,
        Err(error) => {
            tracing::debug!(%error, "cannot read /proc/self/smaps; keeping start-up pages");
            return 0;
        }
    };
    let mut released = 0;
    for range in clean_read_only_file_mappings(&smaps) {
        let len = range.end - range.start;
        // SAFETY: the range is a whole mapping of this process that is
        // private, not writable and file-backed, with no anonymous
        // (copied-on-write) page: every page in it is the page cache's copy
        // of the file, which is what a fault maps back. MADV_DONTNEED only
        // removes the page-table entries; no byte any reference can see
        // changes, and nothing here unmaps or frees memory.
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

/// The address ranges of mappings in `smaps` (the format of
/// `/proc/<pid>/smaps`) that are file-backed, private, readable and not
/// writable, and hold no anonymous page.
fn clean_read_only_file_mappings(smaps: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    // The mapping being read, if it qualifies so far.
    let mut candidate: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(header) = MappingHeader::parse(line) {
            candidate = header.is_read_only_private_file().then_some(header.range);
            continue;
        }
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            let clean = anonymous.trim().strip_suffix("kB").is_some_and(|kib| kib.trim() == "0");
            if let Some(range) = candidate.take().filter(|_| clean) {
                ranges.push(range);
            }
        }
    }
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
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
        let perms = fields.next().filter(|perms| perms.len() == 4)?;
        let path = fields.nth(3).unwrap_or("");
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
VmFlags: rd mr mw me sd
5635f0639000-5635f15bf000 r-xp 004bb000 fe:00 7225549                    /usr/bin/weft
Size:              15896 kB
Anonymous:             0 kB
5635f15bf000-5635f1636000 r--p 01440000 fe:00 7225549                    /usr/bin/weft
Anonymous:           476 kB
5635f1636000-5635f163e000 rw-p 014b6000 fe:00 7225549                    /usr/bin/weft
Anonymous:             0 kB
563608c6c000-563608cd1000 rw-p 00000000 00:00 0                          [heap]
Anonymous:           392 kB
7f1b256d3000-7f1b256f9000 r--p 00000000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f1b25a00000-7f1b25a01000 r--s 00000000 fe:00 99                         /dev/shm/shared
Anonymous:             0 kB
7f1b25b00000-7f1b25b04000 r--p 00000000 00:00 0 
Anonymous:             0 kB
7ffd1e1f0000-7ffd1e1f2000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_file_mappings_qualify() {
        let ranges = clean_read_only_file_mappings(SMAPS);
        assert_eq!(
            ranges,
            vec![
                0x5635f017d000..0x5635f0639000, // rodata
                0x5635f0639000..0x5635f15bf000, // text
                0x7f1b256d3000..0x7f1b256f9000, // a library
            ],
            "relocated (copied-on-write), writable, shared and anonymous mappings stay"
        );
    }

    #[test]
    fn a_mapping_without_an_anonymous_line_is_left_alone() {
        let smaps = "7f1b256d3000-7f1b256f9000 r--p 00000000 fe:00 1234 /lib/libc.so.6\nSize: 4 kB\n";
        assert!(clean_read_only_file_mappings(smaps).is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        if std::fs::metadata("/proc/self/smaps").is_err() {
            return eprintln!("skipping: no /proc/self/smaps (is /proc mounted?)");
        }
        let released = release_startup_pages();
        // Code and read-only data are still there to run and read.
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(released > 0, "a test binary has read-only file mappings");
    }
}

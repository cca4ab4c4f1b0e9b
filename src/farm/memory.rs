//! How many members fit on a CUDA device: its free memory, asked of the CUDA runtime that
//! libtorch has loaded (tch does not expose it), over what one member needs.

use super::Devices;

/// Members per CUDA pack at most: launches are what a GPU's time goes to on such small layers,
/// so wider is faster, up to this.
const MAX_CUDA_PACK: usize = 256;

/// The widest pack every CUDA device of `devices` holds with half its free memory, at
/// `member_bytes` a member; `MAX_CUDA_PACK` where the runtime cannot be asked.
pub fn cuda_pack_cap(devices: &Devices, member_bytes: u64) -> usize {
    devices
        .workers
        .iter()
        .filter_map(worker_free_bytes)
        .map(|free| (free / 2 / member_bytes.max(1)) as usize)
        .fold(MAX_CUDA_PACK, usize::min)
        .max(1)
}

/// Free bytes on a CUDA worker's device (None on a CPU worker).
pub fn worker_free_bytes(worker: &super::Worker) -> Option<u64> {
    match worker.device {
        tch::Device::Cuda(index) => cuda_free_bytes(index),
        _ => None,
    }
}

/// Free bytes on CUDA device `index`, or None where no CUDA runtime is loaded or it fails.
/// Asked on a thread of its own: selecting the device is per thread, and restoring the caller's
/// would create a context on device 0 where the caller had none yet (half a GiB on an H100).
pub fn cuda_free_bytes(index: usize) -> Option<u64> {
    let path = loaded_library(b"libcudart")?;
    std::thread::spawn(move || ask_free_bytes(&path, index)).join().ok().flatten()
}

fn ask_free_bytes(path: &std::ffi::CStr, index: usize) -> Option<u64> {
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: RTLD_NOLOAD only takes a further reference to a library libtorch_cuda already
    // loaded (given back by dlclose); the two symbols have these C signatures in every CUDA
    // runtime since 4.0, and the calls only select this thread's device and read two counters.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let (set, info) = (libc::dlsym(handle, c"cudaSetDevice".as_ptr()), libc::dlsym(handle, c"cudaMemGetInfo".as_ptr()));
        let mut answer = None;
        if !set.is_null() && !info.is_null() {
            let set = std::mem::transmute::<*mut libc::c_void, SetDevice>(set);
            let info = std::mem::transmute::<*mut libc::c_void, MemGetInfo>(info);
            let (mut free, mut total) = (0usize, 0usize);
            if set(index as i32) == 0 && info(&mut free, &mut total) == 0 {
                answer = Some(free as u64);
            }
        }
        libc::dlclose(handle);
        answer
    }
}

/// The most memory this process has held resident so far (getrusage's peak), in bytes.
pub fn peak_resident_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    usage.ru_maxrss.max(0) as u64 * 1024 // Linux counts kilobytes
}

/// The memory this process may take on the host, in bytes, and what sets it: the least of the
/// machine's physical memory, its cgroup's limit (what Slurm's `--mem` sets) and its address
/// space limit (`ulimit -v`) less what it has mapped already (libtorch maps gigabytes).
pub fn host_memory_limit() -> Option<(f64, &'static str)> {
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let mut limits = vec![(pages as f64 * page as f64, "this machine's memory")];
    limits.extend(cgroup_limit().map(|b| (b, "this job's memory limit (cgroup)")));
    let mut rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rlimit) } == 0 && rlimit.rlim_cur != libc::RLIM_INFINITY {
        let mapped = status_kb("VmSize:").unwrap_or(0.0) * 1024.0;
        limits.push(((rlimit.rlim_cur as f64 - mapped).max(0.0), "the address space left under ulimit -v"));
    }
    limits.into_iter().filter(|(b, _)| *b > 0.0).min_by(|a, b| a.0.total_cmp(&b.0))
}

/// The tightest memory limit of this process's cgroup and its ancestors (v2 `memory.max`, v1
/// `memory.limit_in_bytes`); None where none is set.
fn cgroup_limit() -> Option<f64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut files = Vec::new();
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, file) = match controllers {
            "" => ("/sys/fs/cgroup".to_string(), "memory.max"),
            c if c.split(',').any(|c| c == "memory") => ("/sys/fs/cgroup/memory".to_string(), "memory.limit_in_bytes"),
            _ => continue,
        };
        let mut dir = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            files.push(dir.join(file));
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                break;
            }
        }
    }
    // "max", or a huge number, means no limit.
    let read = |f: &std::path::PathBuf| std::fs::read_to_string(f).ok()?.trim().parse::<f64>().ok().filter(|&b| b < (1u64 << 60) as f64);
    files.iter().filter_map(read).min_by(f64::total_cmp)
}

/// A `/proc/self/status` field given in kB.
fn status_kb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The path of the loaded shared object whose file name starts with `prefix`: libtorch's
/// wheels load `libcudart.so.13`, its zips a hashed `libcudart-<hash>.so.12`, so the name
/// cannot be guessed.
fn loaded_library(prefix: &[u8]) -> Option<std::ffi::CString> {
    struct Search<'a> {
        prefix: &'a [u8],
        found: Option<std::ffi::CString>,
    }
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _: libc::size_t, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: dl_iterate_phdr hands each loaded object's info, whose name is a C string
        // (empty for the executable), and the `Search` passed below as `data`.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search)) };
        if info.dlpi_name.is_null() {
            return 0;
        }
        let path = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
        let name = path.to_bytes().rsplit(|&b| b == b'/').next().unwrap_or_default();
        if name.starts_with(search.prefix) {
            search.found = Some(path.to_owned());
            return 1;
        }
        0
    }
    let mut search = Search { prefix, found: None };
    // SAFETY: the callback only reads what it is handed and writes `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut libc::c_void) };
    search.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_libraries_are_found_by_the_start_of_their_name() {
        let found = loaded_library(b"libtorch_cpu").expect("libtorch_cpu is loaded");
        assert!(found.to_bytes().ends_with(b"libtorch_cpu.so"), "{found:?}");
        assert_eq!(loaded_library(b"libnothing-of-the-kind"), None);
    }

    #[test]
    fn the_peak_resident_size_covers_what_was_touched() {
        let block = vec![1u8; 64 << 20];
        assert!(peak_resident_bytes() >= block.iter().map(|&b| b as u64).sum::<u64>());
    }

    #[test]
    fn without_a_runtime_to_ask_the_cap_is_the_widest_pack() {
        // This machine's CUDA devices are pretend ones: the runtime answers no.
        let devices = Devices::parse_with("cuda:0", 1, 4).unwrap();
        if cuda_free_bytes(0).is_none() {
            assert_eq!(cuda_pack_cap(&devices, 1 << 20), MAX_CUDA_PACK);
        }
        assert_eq!(cuda_pack_cap(&Devices::parse_with("cpu", 0, 2).unwrap(), 1), MAX_CUDA_PACK);
    }

    #[test]
    fn the_host_limit_is_at_most_the_machine_and_reads_this_process() {
        let (bytes, _) = host_memory_limit().unwrap();
        // SAFETY: sysconf only reads system constants.
        let physical = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) as f64 * libc::sysconf(libc::_SC_PAGESIZE) as f64 };
        assert!(bytes > 0.0 && bytes <= physical);
        assert!(status_kb("VmSize:").unwrap() > 0.0);
    }
}

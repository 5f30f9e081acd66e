//! Proves that a PRELOGIN answer whose header claims 65535 bytes is refused without
//! allocating the claimed size: a counting global allocator records the largest single
//! allocation made while the probe runs. (Its own binary, because a global allocator
//! applies to every test in it.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use tdsvip_probes::{Outcome, PreloginProbe, ProbeConfig};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let v = f();
    ARMED.store(false, Ordering::Relaxed);
    (v, LARGEST.load(Ordering::Relaxed))
}

#[test]
fn hostile_length_is_refused_without_allocating_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request_len = tdsvip_probes::prelogin::request(false).len();
    let header = vec![0x04, 0x01, 0xFF, 0xFF, 0, 0, 1, 0];
    let server = rt.block_on(serve(Script::answer(request_len, header, true)));
    let probe = PreloginProbe::new(server.addr, ProbeConfig::default()).unwrap();
    // Warm up the runtime's lazily built structures outside the measurement.
    rt.block_on(probe.probe());

    let (r, largest) = measure(|| rt.block_on(bounded(probe.probe())));
    assert!(
        matches!(r.outcome, Outcome::ProtocolError { .. }),
        "{}",
        r.outcome
    );
    eprintln!("largest allocation during the probe: {largest} bytes");
    assert!(
        largest < 8 * 1024,
        "largest allocation during the probe was {largest} bytes"
    );

    // Control: the counter does see an allocation of the claimed size.
    let (_, largest) = measure(|| std::hint::black_box(Vec::<u8>::with_capacity(65535)));
    assert!(largest >= 65535);
}

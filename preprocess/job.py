"""The `shard` job: plan shards, process images in parallel, write shards, then the manifest.

The plan (which image goes to which shard, in which order) is fixed by the inputs and the
seed before any image is read, so a shard can be finished and recorded on its own. That is
what makes the job resumable: a re-run skips every shard whose record and checksum match and
writes only the rest, and the output is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from preprocess.atomic import TMP_SUFFIX, write_json
from preprocess.celeba import (
    PARTITION_FILE,
    CelebAError,
    ImageSource,
    read_partition,
    sample_key,
)
from preprocess.images import Encoding, RejectedImage, SampleResult, component_names, make_sample
from preprocess.manifest import MANIFEST_NAME, build_manifest
from preprocess.pillow_check import pillow_flavour, warn_if_plain_pillow
from preprocess.plan import PROGRESS_DIR, Plan, ShardJob, ShardPlan, plan_shards
from preprocess.protocol import Protocol
from preprocess.shards import ShardWriter, index_path_for, sha256_file

log = logging.getLogger(__name__)

JOB_RECORD = "job.json"
CHUNK = 8  # names a worker takes at a time
WORKER_DIED = "its worker process died while making it (killed, e.g. for memory, or crashed)"
LOCK_NAME = "lock"  # held (flock) by the job writing the folder; holds its pid
MAX_WARNING_LINES = 20


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def job_fingerprint(job: ShardJob, plan: Plan) -> dict[str, object]:
    """Everything that decides the bytes of the shards; a resumed run must match it."""
    names = hashlib.sha256()
    for shard in plan.shards:
        names.update(f"{shard.tar}:{','.join(shard.names)}\n".encode())
    fingerprint = {
        "protocol": asdict(job.protocol),
        "encoding": asdict(job.encoding),
        "seed": job.seed,
        "samples_per_shard": job.samples_per_shard,
        "plan_sha256": names.hexdigest(),
        "pil": pillow_flavour(),
    }
    return json.loads(json.dumps(fingerprint))  # as it reads back from job.json (lists, not tuples)


# ---- worker side -------------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init_worker(source: ImageSource, protocol: Protocol, encoding: Encoding) -> None:
    _worker.update(source=source, protocol=protocol, encoding=encoding)


def _process(name: str) -> tuple[str, SampleResult | str]:
    """Make one sample; any failure becomes a reason string, so no image can end the job."""
    source: ImageSource = _worker["source"]  # type: ignore[assignment]
    try:
        data = source.read(name)
        return name, make_sample(data, _worker["protocol"], _worker["encoding"])  # type: ignore[arg-type]
    except RejectedImage as exc:
        return name, str(exc)
    except OSError as exc:
        return name, f"unreadable: {exc}"
    except Exception as exc:  # noqa: BLE001 - one bad file must not end a long job
        return name, f"unexpected error: {type(exc).__name__}: {exc}"


def _results(
    job: ShardJob, source: ImageSource, names: list[str]
) -> Iterator[tuple[str, SampleResult | str]]:
    """Results in the order of `names`, from a pool of workers (or in-process for one)."""
    args = (source, job.protocol, job.encoding)
    if job.workers == 1:
        _init_worker(*args)
        yield from map(_process, names)
        return
    # A worker that dies (killed for memory, or a decoder crash) would leave a
    # multiprocessing.Pool waiting forever; an executor reports it (BrokenProcessPool). The
    # names then in flight go one at a time through a one-worker pool, so the image that
    # kills a worker is known, rejected and counted, and the job goes on.
    start, one_by_one_until = 0, 0
    while start < len(names):
        alone = start < one_by_one_until
        stop, chunk = (one_by_one_until, 1) if alone else (len(names), CHUNK)
        pool = ProcessPoolExecutor(
            1 if alone else job.workers, multiprocessing.get_context("fork"), _init_worker, args
        )
        try:
            for result in pool.map(_process, names[start:stop], chunksize=chunk):
                yield result
                start += 1
        except BrokenProcessPool:
            if alone:
                yield names[start], WORKER_DIED
                start += 1
            else:
                one_by_one_until = start + 2 * CHUNK * job.workers  # what was in flight
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


# ---- main side ---------------------------------------------------------------------------


def _shard_is_complete(out: Path, shard: ShardPlan) -> dict | None:
    """The shard's record if the shard and its index are in place and match it, else None."""
    try:
        record = json.loads((out / shard.record).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("samples") == 0:
        return record  # every image of the shard was rejected: no files to check
    tar_path = out / shard.tar
    if not (tar_path.is_file() and index_path_for(tar_path).is_file()):
        return None
    if record.get("sha256") != sha256_file(tar_path):
        return None
    return record


def _check_or_write_job_record(out: Path, fingerprint: dict[str, object]) -> None:
    path = out / PROGRESS_DIR / JOB_RECORD
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous is not None and previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise CelebAError(
                f"{out}: holds shards made with other settings ({', '.join(changed)} differ); "
                "use another --out or delete that folder"
            )
    write_json(path, fingerprint)


def _remove_temporaries(out: Path) -> int:
    leftovers = list(out.rglob(f"*{TMP_SUFFIX}"))
    for path in leftovers:
        path.unlink()
    return len(leftovers)


@contextlib.contextmanager
def _only_job_in(out: Path) -> Iterator[None]:
    """Hold OUT's lock for the job: a second job on the same folder would delete the first
    one's temporary files as leftovers and write the same shards (a resubmitted job beside a
    running one), leaving a manifest whose sizes and hashes match no tar."""
    path = out / PROGRESS_DIR / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise CelebAError(f"{out}: another srgan-preprocess job is writing there (pid "
                              f"{holder}); wait for it or use another --out") from None  # fmt: skip
        except OSError as exc:  # a file system without locks (Lustre without flock, NFS nolock)
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            log.warning("%s: no file locks here (%s); make sure no other job writes there", out,
                        exc.strerror)  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:  # the lock itself goes with the file's close, or with the process
            handle.truncate(0)


def run_shard_job(job: ShardJob, progress: bool = True) -> dict:
    """Run (or finish) the job and return the manifest that it wrote."""
    warn_if_plain_pillow()
    source = ImageSource.open(job.celeba_root)
    partition = read_partition(job.celeba_root / PARTITION_FILE)
    present = source.names()
    plan = plan_shards(partition, present, job.seed, job.samples_per_shard)
    for shard in plan.shards:
        for name in shard.names:
            sample_key(name)  # bad names stop the job before any work

    job.out.mkdir(parents=True, exist_ok=True)
    with _only_job_in(job.out):
        return _write_shards(job, source, plan, progress)


def _write_shards(job: ShardJob, source: ImageSource, plan: Plan, progress: bool) -> dict:
    """The shards of `plan` not complete yet, then the manifest (OUT's lock held)."""
    _check_or_write_job_record(job.out, job_fingerprint(job, plan))
    if removed := _remove_temporaries(job.out):
        log.info("removed %d temporary files left by an interrupted run", removed)

    records: dict[str, dict] = {}
    pending: list[ShardPlan] = []
    for shard in plan.shards:
        record = _shard_is_complete(job.out, shard)
        if record is None:
            pending.append(shard)
        else:
            records[shard.tar] = record
    if records:
        log.info("resuming: %d of %d shards already complete", len(records), len(plan.shards))

    names = [name for shard in pending for name in shard.names]
    started = time.perf_counter()
    warnings_shown = 0
    with tqdm(
        total=len(names), unit="img", desc="shard", disable=not progress, mininterval=1
    ) as bar:
        results = _results(job, source, names)
        for shard in pending:
            rejected: list[dict[str, str]] = []
            converted: Counter[str] = Counter()
            with ShardWriter(job.out / shard.tar) as writer:
                for expected in shard.names:
                    name, result = next(results)
                    assert name == expected, "results must come in plan order"
                    if isinstance(result, str):
                        rejected.append({"file": source.display_name(name), "reason": result})
                        warnings_shown += 1
                        if warnings_shown <= MAX_WARNING_LINES:
                            bar.write(f"warning: skipped {source.display_name(name)}: {result}")
                        elif warnings_shown == MAX_WARNING_LINES + 1:
                            bar.write("warning: more images skipped; the manifest lists them all")
                    else:
                        writer.add(sample_key(name), result.components)
                        if result.converted_from:
                            converted[result.converted_from] += 1
                    bar.update(1)
                if writer.samples:
                    digest = writer.close()
                else:  # nothing to write: readers reject empty tars
                    writer.abort()
                    digest = None
            record = {
                "tar": shard.tar,
                "index": index_path_for(Path(shard.tar)).as_posix(),
                "samples": writer.samples,
                "bytes": (job.out / shard.tar).stat().st_size if digest else 0,
                "sha256": digest,
                "rejected": rejected,
                "converted": dict(converted),
            }
            write_json(job.out / shard.record, record)
            records[shard.tar] = record
    elapsed = time.perf_counter() - started

    manifest = build_manifest(
        job=job,
        plan=plan,
        records=[records[shard.tar] for shard in plan.shards],
        components=component_names(job.protocol, job.encoding),
        synthetic=source.synthetic,
        source_description=source.location.name,
    )
    write_json(job.out / MANIFEST_NAME, manifest)
    rate = len(names) / elapsed if elapsed > 0 and names else 0.0
    summary = (
        f"srgan-preprocess: {len(names)} images processed in {elapsed:.1f} s "
        f"({rate:.0f} images/s), "
        f"{manifest['images']['written']} samples in {len(plan.shards)} shards, "
        f"{len(manifest['rejected'])} rejected, {manifest['missing']} missing "
        f"-> {job.out / MANIFEST_NAME}"
    )
    print(summary, flush=True)
    return manifest

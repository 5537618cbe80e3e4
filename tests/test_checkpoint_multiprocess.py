"""Two JAX processes on one machine share one checkpoint directory, as hosts of a TPU pod do.

Arrays span both processes (not fully addressable), so saving, checksumming (allgather),
falling back from a corrupt step (agreement + one mover) and exporting must all be collective.
A deadlock or a disagreement between the processes shows up as a timeout or a failed check.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import json, os, sys, warnings
    process_id, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id, initialization_timeout=60)
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxformer.checkpoint import Checkpointer, abstract_like, export_pretrained, load_pretrained

    mesh = Mesh(np.array(jax.devices()), ("data",))   # 4 devices, 2 per process

    def global_array(value, spec):
        return jax.make_array_from_callback(
            value.shape, NamedSharding(mesh, spec), lambda i: value[i])

    def state(k):
        w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3) + k
        return {"params": {"w": global_array(w, P("data", None))},
                "step": global_array(np.asarray(k, np.int32), P())}

    ckpt_dir = os.path.join(workdir, "checkpoints")
    ckpt = Checkpointer(ckpt_dir)
    ckpt.save(1, state(1), extra={"k": 1}, val_loss=0.5)
    ckpt.save(2, state(2), extra={"k": 2}, val_loss=0.7, wait=True)
    assert not state(1)["params"]["w"].is_fully_addressable
    multihost_utils.sync_global_devices("saved")
    if process_id == 0:
        with open(os.path.join(ckpt_dir, "2", "meta", "metadata"), "w") as f:
            f.write("{not json")
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump({"task": "lm", "model": {"vocab_size": 32, "d_model": 8}}, f)
    multihost_utils.sync_global_devices("corrupted")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = ckpt.restore_latest(abstract_like(state(0)))
    w = multihost_utils.process_allgather(restored.state["params"]["w"], tiled=True)
    step, params = ckpt.restore_params()
    ckpt.close()
    export_pretrained(workdir, os.path.join(workdir, "export"))
    loaded = load_pretrained(os.path.join(workdir, "export"))
    exported = multihost_utils.process_allgather(loaded.params["w"], tiled=True)
    print("RESULT", json.dumps({
        "step": restored.step, "extra": restored.extra, "warnings": len(caught),
        "w_ok": bool(np.array_equal(w, np.arange(24, dtype=np.float32).reshape(8, 3) + 1)),
        "steps_left": Checkpointer(ckpt_dir, read_only=True).all_steps(),
        "params_step": step,
        "params_sum": float(np.asarray(
            multihost_utils.process_allgather(params["w"], tiled=True)).sum()),
        "export_step": loaded.step, "export_ok": bool(np.array_equal(exported, w)),
    }), flush=True)
""")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_save_fall_back_and_export_together(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # 2 devices per process instead
  env['JAX_PLATFORMS'] = 'cpu'
  port = str(free_port())
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', WORKER, str(i), port, str(tmp_path)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=150)[0])
  finally:
    for proc in procs:
      proc.kill()
  results = []
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
    results.append(json.loads(out.split('RESULT ', 1)[1].splitlines()[0]))
  for r in results:
    assert r['step'] == 1 and r['extra'] == {'k': 1} and r['w_ok']
    assert r['warnings'] == 1  # step 2's bad JSON, reported on each process
    assert r['steps_left'] == [1]
    assert r['params_step'] == 1 and r['params_sum'] == sum(range(24)) + 24
    assert r['export_step'] == 1 and r['export_ok']
  assert os.listdir(tmp_path / 'checkpoints_corrupt') == ['2']  # moved once, by process 0

"""A worker keeps what it built to start out of the garbage collector's full passes."""

import gc

from config.celery_app import startup_objects_out_of_the_collectors_way


def test_a_ready_worker_freezes_what_it_built_to_start():
    gc.unfreeze()  # another test may have sent the worker signals in this process
    assert gc.get_freeze_count() == 0
    startup_objects_out_of_the_collectors_way()  # on worker_ready (and worker_process_init)
    try:
        # Django, DRF, Celery and the project's modules: far more than a handful of objects.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()

# igkd: make setup | test | reproduce | book | book-check | clean  (PROFILE=ci|quick|paper|auto)
PYTHON ?= python3
PROFILE ?= auto

.PHONY: setup test test-fast lint reproduce book book-check results-archive gpu-check clean

# glibc malloc serves a student's ~38 MB activations with fresh mmap()s, unmaps them when freed and
# trims its heap, so every training step page-faults its memory back in. Keeping what it got cut a
# ci student run's system time from 4.7 s to 1.8 s (wall ~10 % less) at the same peak memory, one
# thread on a 2-core AVX2 EPYC. Exported to everything make starts (kernels, Dask workers); set
# either variable yourself to override.
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184

setup:  ## install igkd, the notebooks' and the tests' dependencies into the current Python
	$(PYTHON) -m pip install -e ".[dev]"
	# The frost textures of CIFAR-10-C ship in this wheel; its own dependencies (scikit-image,
	# full OpenCV) are not needed and clash with opencv-python-headless, hence --no-deps.
	$(PYTHON) -m pip install --no-deps "imagecorruptions==1.1.2"

# One torch thread per process: two xdist workers (and the Dask workers the notebooks start) on
# two cores otherwise oversubscribe OpenMP, which made ci runs up to 50x slower here. loadscope
# keeps each notebook's cells on one worker (one kernel).
test:  ## unit tests, then every notebook executed by nbval in the ci profile
	IGKD_PROFILE=ci OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest --nbval -n 2 --dist loadscope -p no:cacheprovider --durations=25

test-fast:  ## the unit tests without the slow ones (no notebooks, no book): minutes, while working
	IGKD_PROFILE=ci OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest tests -m "not slow" -n 2 -p no:cacheprovider --durations=10

lint:
	pre-commit run --all-files

# TEACHER=path-or-URL[#sha256=...] distils every student from that teacher file (IGKD_TEACHER; the
# paper's: huyvnphan's MobileNet-V2) instead of the profile's own; PRECISION=fp32|amp|bf16|auto
# overrides the recipes' precision (IGKD_PRECISION; paper: fp32). The banner names both.
# RESULTS=archive.tar.gz (from `igkd runs export`) first merges that archive's runs into the run
# cache, so the notebooks reuse them, and tags runs made before runs recorded their purpose; the
# book's banner then names the archive. JOBS=2 executes two chapters at a time (each in its own
# kernel; with OMP_NUM_THREADS=1 on 2 cores), which helps where chapters make many small runs.
reproduce:  ## execute every notebook into book/executed/ with papermill (PROFILE=, RESUME=1, RESULTS=, TEACHER=, PRECISION=, JOBS=)
	$(if $(RESULTS),$(PYTHON) -m igkd.cli runs import $(RESULTS))
	$(if $(RESULTS),$(PYTHON) -m igkd.cli runs migrate)
	$(if $(TEACHER),IGKD_TEACHER=$(TEACHER)) $(if $(PRECISION),IGKD_PRECISION=$(PRECISION)) \
		$(PYTHON) -m igkd.book execute --profile $(PROFILE) $(if $(RESUME),--resume) \
		$(if $(RESULTS),--results $(RESULTS)) $(if $(JOBS),--jobs $(JOBS))

book: reproduce  ## the Jupyter Book of the executed notebooks; any warning or notebook error fails
	$(PYTHON) -m igkd.book prepare
	jupyter-book build -W -n --keep-going book/

book-check:  ## open every page of the built book in headless Chromium (apt-get install chromium)
	$(PYTHON) -m igkd.book check

# The committed archive of a profile's book (results/, README "Results that travel"): the whole book
# executed (resumable; the experiments' runs on two one-thread Dask workers, which suits 2 cores),
# then its runs exported lean: metrics of every run, models only of the teachers and of the runs the
# chapters read (float16), the IG maps' sample and the executed chapters. ARCHIVE= names the file.
ARCHIVE ?= results/$(PROFILE)-book-$(shell date -u +%Y%m%d).tar.gz
results-archive:  ## execute and build the book (RESUME=1 continues), then export it lean to ARCHIVE=
	IGKD_WORKERS=$${IGKD_WORKERS:-2} $(MAKE) book PROFILE=$(PROFILE) RESUME=$(RESUME) JOBS=$(JOBS)
	$(PYTHON) -m igkd.cli runs export $(ARCHIVE) --profile $(PROFILE) --book --lean \
		--note "make results-archive PROFILE=$(PROFILE)"

# On a CUDA machine: the CUDA-only tests, the paper recipes for a few hundred steps, fp32 against
# AMP, per-epoch times and the paper book's projected GPU hours (under 10 minutes). ARGS= passes
# options (python -m igkd.gpu_check --help). Without CUDA it stops with one line (exit 2).
gpu-check:  ## on a CUDA GPU: CUDA tests, a short paper-profile run, fp32 vs AMP, GPU-hour projection
	$(PYTHON) -m igkd.gpu_check $(ARGS)

clean:
	rm -rf book/_build book/executed book/summary.md out.ipynb .pytest_cache

# igkd: make setup | test | reproduce | book | book-check | clean      (PROFILE=ci|quick|paper|auto)
PYTHON ?= python3
PROFILE ?= auto

.PHONY: setup test lint reproduce book book-check clean

setup:  ## install igkd, the notebooks' and the tests' dependencies into the current Python
	$(PYTHON) -m pip install -e ".[dev]"

# One torch thread per process: two xdist workers (and the Dask workers the notebooks start) on
# two cores otherwise oversubscribe OpenMP, which made ci runs up to 50x slower here. loadscope
# keeps each notebook's cells on one worker (one kernel).
test:  ## unit tests, then every notebook executed by nbval in the ci profile
	IGKD_PROFILE=ci OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest --nbval -n 2 --dist loadscope -p no:cacheprovider --durations=25

lint:
	pre-commit run --all-files

reproduce:  ## execute every notebook into book/executed/ with papermill (PROFILE=..., RESUME=1)
	$(PYTHON) -m igkd.book execute --profile $(PROFILE) $(if $(RESUME),--resume)

book: reproduce  ## the Jupyter Book of the executed notebooks; any warning or notebook error fails
	$(PYTHON) -m igkd.book prepare
	jupyter-book build -W -n --keep-going book/

book-check:  ## open every page of the built book in headless Chromium (apt-get install chromium)
	$(PYTHON) -m igkd.book check

clean:
	rm -rf book/_build book/executed book/_toc.yml book/summary.md out.ipynb .pytest_cache

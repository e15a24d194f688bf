# igkd: make setup | test | reproduce | book | clean      (PROFILE=ci|quick|paper|auto)
PYTHON ?= python3
PROFILE ?= auto
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: setup test lint reproduce book clean

setup:  ## install igkd, the notebooks' and the tests' dependencies into the current Python
	$(PYTHON) -m pip install -e ".[dev]"

test:  ## unit tests, then every notebook executed by nbval in the ci profile
	IGKD_PROFILE=ci $(PYTHON) -m pytest --nbval -n 2 --dist loadscope -p no:cacheprovider

lint:
	pre-commit run --all-files

reproduce:  ## execute every notebook into book/executed/ with papermill (PROFILE=...)
	mkdir -p book/executed
	for nb in $(NOTEBOOKS); do \
	  IGKD_PROFILE=$(PROFILE) papermill --cwd notebooks $$nb book/executed/$$(basename $$nb) || exit 1; \
	done

book: reproduce  ## build the Jupyter Book from the executed notebooks
	jupyter-book build book/

clean:
	rm -rf book/_build book/executed out.ipynb .pytest_cache

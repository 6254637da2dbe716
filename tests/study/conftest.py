import pandas as pd
import pytest

from tests.study.histories import make_histories


@pytest.fixture
def histories() -> pd.DataFrame:
    return make_histories()

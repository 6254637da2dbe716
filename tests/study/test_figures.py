import numpy as np
import pytest
from matplotlib.figure import Figure

from ecg_transfer.study.figures import f1_vs_fraction, learning_curves, per_class_f1
from ecg_transfer.study.summaries import summarise_runs
from tests.study.histories import make_histories, registry


def test_f1_vs_fraction_one_line_per_arm_labelled_and_coloured_by_the_registry(histories):
    fig = f1_vs_fraction(summarise_runs(histories), arms=registry())
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["random init", "image transfer", "CAE transfer"]
    assert len(ax.containers) == 3  # one errorbar container per arm
    line = ax.containers[0].lines[0]
    np.testing.assert_allclose(sorted(line.get_xdata()), [50.0, 100.0])
    assert line.get_color() == "tab:grey"


def test_f1_vs_fraction_draws_the_floor(histories):
    fig = f1_vs_fraction(summarise_runs(histories), arms=registry(),
                         floor={"majority class": 0.31, "stratified guess": 0.22})
    ax = fig.axes[0]
    floors = [line for line in ax.get_lines() if line.get_label().startswith("floor")]
    assert [line.get_label() for line in floors] == ["floor: majority class", "floor: stratified guess"]
    assert [line.get_ydata()[0] for line in floors] == [0.31, 0.22]


def test_f1_vs_fraction_plots_the_means(histories):
    summary = summarise_runs(histories)
    fig = f1_vs_fraction(summary, metric="honest_test_f1_weighted", arms=("transfer",))
    line = fig.axes[0].containers[0].lines[0]
    expected = summary[summary["arm"] == "transfer"].groupby("fraction")["honest_test_f1_weighted"].mean()
    np.testing.assert_allclose(line.get_ydata(), expected.sort_index().to_numpy())


def test_learning_curves_one_panel_per_fraction(histories):
    fig = learning_curves(histories, arms=("random", "transfer", "image"))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["100% of training data", "50% of training data"]
    for ax in fig.axes:
        assert len(ax.get_lines()) == 3
        assert len(ax.collections) == 3  # one SD band per arm
    first = fig.axes[0].get_lines()[0]
    test = histories[(histories["split"] == "test") & (histories["fraction"] == 1.0) & (histories["arm"] == "random")]
    np.testing.assert_allclose(first.get_ydata(), test.groupby("epoch")["f1_weighted"].mean().to_numpy())


def test_learning_curves_bad_split(histories):
    with pytest.raises(ValueError, match="no rows of split"):
        learning_curves(histories, split="holdout")


def test_per_class_heatmap(histories):
    fig = per_class_f1(summarise_runs(histories), arms=registry())
    heat = fig.axes[0]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["SB", "SR", "AFIB"]
    assert heat.images[0].get_array().shape == (6, 3)  # 2 fractions x 3 arms, 3 classes
    assert [t.get_text() for t in heat.get_yticklabels()][:3] == ["100% random init", "100% image transfer", "100% CAE transfer"]
    assert len(fig.axes) == 2  # heatmap and colour bar


@pytest.mark.parametrize("classes", [("AF", "non-AF"), tuple(f"code{i}" for i in range(27))])
def test_per_class_heatmap_for_any_number_of_classes(classes):
    summary = summarise_runs(make_histories(classes=classes, n_trials=2, n_epochs=3))
    heat = per_class_f1(summary, arms=registry()).axes[0]
    assert [t.get_text() for t in heat.get_xticklabels()] == list(classes)
    assert heat.images[0].get_array().shape == (6, len(classes))


def test_reconstruction_figure_shows_each_window_with_its_mse():
    import numpy as np

    from ecg_transfer.study.figures import reconstruction_figure

    originals = np.vstack([np.sin(np.linspace(0, 20, 512)), np.cos(np.linspace(0, 20, 512))])
    fig = reconstruction_figure(originals, originals * 0.5, fs=250.0)
    axes = fig.get_axes()
    assert len(axes) == 2 and all(len(ax.get_lines()) == 2 for ax in axes)
    expected = np.mean((originals[0] * 0.5) ** 2)
    assert axes[0].get_title() == f"MSE per sample {expected:.3f}"

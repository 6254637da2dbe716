"""Rhythm classes are neither trivially separable by heart rate nor impossible to tell apart.

A rate-only baseline (mean HR, RR SD, RMSSD from detected R peaks, random forest, stratified
5-fold cross-validation) must do clearly better than chance but clearly worse than perfect:
if it scored ~1.0 the simulated task would be a rate lookup and a deep model would learn
nothing about morphology; if it scored near chance the rhythms would carry no rate signature.
"""

from __future__ import annotations

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict


def _cv_f1(model, features, labels):
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    predicted = cross_val_predict(model, features, labels, cv=folds)
    return f1_score(labels, predicted, average="weighted")


def test_rate_features_separate_rhythms_partly_but_not_perfectly(rendered_release):
    features, labels = rendered_release.features, rendered_release.labels
    forest = _cv_f1(RandomForestClassifier(n_estimators=200, random_state=0), features, labels)
    chance = _cv_f1(DummyClassifier(strategy="stratified", random_state=0), features, labels)
    assert chance < 0.3
    assert 0.5 < forest < 0.95, forest
    assert forest > chance + 0.3


def test_rate_features_cannot_tell_the_re_entrant_tachycardias_apart(rendered_release):
    # SVT, AVNRT and AVRT differ in where the retrograde P sits, not in rate or regularity.
    chosen = np.isin(rendered_release.labels, ["SVT", "AVNRT", "AVRT"])
    features, labels = rendered_release.features[chosen], rendered_release.labels[chosen]
    forest = _cv_f1(RandomForestClassifier(n_estimators=50, random_state=0), features, labels)
    assert forest < 0.75, forest

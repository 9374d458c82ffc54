/**
 * losses: the PBIP objectives as pure functions of tensors (METHOD.md sections 3-4).
 *
 *   mergeSubclassLogits          K subclass logits -> class logit (mean / softmax-weighted)
 *   multilabelSoftMarginLoss     sigmoid BCE, mean over B and N (one term of eq. 7)
 *   classificationLoss           L_CLS over stages with stage weights (eq. 7-8)
 *   foregroundContrastiveLoss    L_FGS (eq. 9-10)
 *   backgroundContrastiveLoss    L_BGS (eq. 11-12)
 *   pbipLoss                     alpha*L_CLS + beta*(theta1*L_FGS + theta2*L_BGS + w*mean(M_4)) (eq. 6, 13)
 */
export * from "./merge";
export * from "./classification";
export * from "./contrastive";
export * from "./total";

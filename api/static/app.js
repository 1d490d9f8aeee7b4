// The cxr-service web page: plain JavaScript modules, no libraries, no build step.

import { initKey } from "./common.js";
import { initDatasets } from "./datasets.js";
import { initLabelling } from "./labelling.js";
import { initModels } from "./models.js";
import { initPredict } from "./predict.js";
import { initTrain } from "./train.js";

initKey();
initPredict();
initLabelling();
initModels();
initDatasets();
initTrain();
